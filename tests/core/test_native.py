"""How a part with a C extension picks its implementation (agentwall.core.native)."""

from __future__ import annotations

import pytest

from agentwall.core.native import choose

ENV = "AGENTWALL_TEST_NATIVE_CHOICE"


def _built() -> str:
    return "native"


def _not_built() -> str:
    raise ImportError("no such extension")


def test_the_native_one_runs_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert choose(ENV, _built, "python") == "native"


def test_the_python_one_runs_when_the_extension_was_not_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert choose(ENV, _not_built, "python") == "python"


def test_the_environment_can_ask_for_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "python")
    assert choose(ENV, _built, "python") == "python"
    monkeypatch.setenv(ENV, "native")
    assert choose(ENV, _built, "python") == "native"


def test_only_a_missing_build_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any other failure of the extension is a bug to see, not a reason to run
    the slower twin quietly."""
    monkeypatch.delenv(ENV, raising=False)

    def broken() -> str:
        raise RuntimeError("extension misbehaved")

    with pytest.raises(RuntimeError, match="misbehaved"):
        choose(ENV, broken, "python")
