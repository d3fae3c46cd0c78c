"""Shared fixtures: the built-in fast upstream as a real subprocess on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentwall.benchtool.procs import FastUpstream


@pytest.fixture(scope="module")
def fast_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastUpstream]:
    workdir: Path = tmp_path_factory.mktemp("upstream")
    with FastUpstream(workdir) as upstream:
        upstream.start()
        yield upstream
