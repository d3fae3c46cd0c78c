"""The fixture server and one ``agentwall start`` in front of it, shared by
every test in tests/conformance: starting them is most of the suite's cost."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conformance_support import Proxy, agentwall, fixture_server


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Proxy]]:
    """(fixture server URL, the proxy in front of it)."""
    tmp = tmp_path_factory.mktemp("conformance")
    with fixture_server(tmp) as upstream, agentwall(tmp, upstream, "--drain-timeout", "2") as proxy:
        yield upstream, proxy
