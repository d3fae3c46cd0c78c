"""``agentwall test LOG``: who sent each logged message.  Both ``start`` and
``wrap`` log a message from the MCP server with ``detail.origin = "server"``
(docs/audit.md); the replay must judge it as the server's."""

from __future__ import annotations

import json

from agentwall.policy.replay import parse_audit_log


def _entry(seq: int, **extra: object) -> str:
    entry = {"v": 1, "seq": seq, "event": "decision", "method": "sampling/createMessage"}
    return json.dumps({**entry, "decision": "allow", "params": {"messages": []}, **extra})


def test_origin_is_read_from_detail_as_both_transports_write_it() -> None:
    lines = [
        _entry(1, transport="http", detail={"origin": "server"}),
        _entry(2, transport="stdio", detail={"origin": "server"}),
        _entry(3, transport="stdio"),
        _entry(4, origin="server"),
        _entry(5, detail={"origin": "nonsense"}),
        _entry(6, detail=["not", "an", "object"]),
    ]
    replay = parse_audit_log("\n".join(lines) + "\n")
    origins = [case.call.origin for case in replay.cases]
    assert origins == ["server", "server", "client", "server", "client", "client"]
