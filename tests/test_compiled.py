"""The mypyc-compiled hot modules (agentwall/compiled.py): built when the
install could build them, never stale, and never home to a msgspec Struct."""

from __future__ import annotations

import ast
import hashlib
import importlib
import os
from pathlib import Path

import msgspec
import pytest
from native_support import native_skipped_on_purpose, require_built

from agentwall import compiled

ROOT = Path(compiled.__file__).parent.parent


def _source(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


@pytest.mark.parametrize("module", compiled.HOT_MODULES)
def test_no_struct_is_defined_in_a_compiled_module(module: str) -> None:
    # mypyc drops a class's keywords: a frozen record would silently become
    # mutable.  Records belong in the module's *_records companion.
    tree = ast.parse(_source(module).read_text())
    structs = [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any("Struct" in ast.unparse(base) for base in node.bases)
    ]
    assert structs == [], f"{module} defines {structs}: move them to {module}_records"


def test_the_records_the_hot_modules_re_export_keep_their_keywords() -> None:
    from agentwall.core import jsonrpc, mcp_http
    from agentwall.io import http_front, pool

    for cls in (
        mcp_http.HttpReply,
        mcp_http.OriginPolicy,
        jsonrpc.Request,
        jsonrpc.Response,
        http_front.FrontConfig,
        pool.PoolMetrics,
    ):
        assert issubclass(cls, msgspec.Struct)
        assert cls.__struct_config__.frozen, cls
    with pytest.raises(TypeError):
        jsonrpc.Request(1, "ping")  # type: ignore[misc]  # kw_only: no positional fields
    with pytest.raises(AttributeError):
        mcp_http.HttpReply(status=200, body=b"").status = 500  # type: ignore[misc]


def test_the_hot_modules_run_compiled() -> None:
    """A clean install builds them (as it builds the C head scan); without a
    C compiler, or with AGENTWALL_NO_MYPYC / AGENTWALL_NO_NATIVE, the pure
    modules serve, and only then is this skipped."""
    if os.environ.get("AGENTWALL_NO_MYPYC", "") in ("1", "true", "yes"):
        pytest.skip("mypyc build skipped on purpose (AGENTWALL_NO_MYPYC)")
    impl = compiled.implementation()
    assert impl != "mixed", "some hot modules are compiled and some are not: reinstall"
    require_built(impl == "compiled", "the mypyc-compiled hot modules")
    for module in compiled.HOT_MODULES:
        loaded = importlib.import_module(module).__file__
        assert loaded is not None
        assert loaded.endswith(".so"), (module, loaded)


def test_no_compiled_module_is_stale() -> None:
    assert compiled.stale_modules() == []
    if native_skipped_on_purpose():
        assert compiled.implementation() == "python"


def _layout(tmp_path: Path, source: bytes, built: bool, recorded: bytes | None) -> Path:
    folder = tmp_path / "pkg" / "sub"
    folder.mkdir(parents=True)
    (folder / "hot.py").write_bytes(source)
    if built:
        (folder / "hot.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\0")
    if recorded is not None:
        digest = hashlib.sha256(recorded).hexdigest()
        (tmp_path / "pkg" / compiled.MANIFEST).write_text(f"pkg.sub.hot {digest}\n")
    return tmp_path


@pytest.mark.parametrize(
    ("built", "recorded", "stale"),
    [
        (True, b"x = 1\n", False),  # built from this very source
        (True, b"x = 0\n", True),  # the source changed since the build
        (True, None, True),  # a build with no record of its source
        (False, None, False),  # nothing compiled: the source is what runs
    ],
)
def test_stale_means_the_source_changed_since_the_build(
    tmp_path: Path, built: bool, recorded: bytes | None, stale: bool
) -> None:
    root = _layout(tmp_path, b"x = 1\n", built, recorded)
    assert compiled.stale_modules(("pkg.sub.hot",), root) == (["pkg.sub.hot"] if stale else [])


def test_agentwall_no_mypyc_at_run_time_loads_the_sources() -> None:
    import subprocess
    import sys

    probe = (
        "from agentwall import compiled; import agentwall.io.http_front as h; "
        "print(compiled.implementation(), h.__file__)"
    )
    env = dict(os.environ, AGENTWALL_NO_MYPYC="1")
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    impl, loaded = done.stdout.split()
    assert impl == "python"
    assert loaded.endswith("http_front.py")
