"""The wrapper's data path in-process, on real pipes and a real audit log:
the parts the speed work touched (direct writes with a transport behind
them, responses delivered without queueing, the secret-masking cache, the
decision entry).  End-to-end behaviour is in the other test_wrap_* files."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvloop

from agentwall.audit.keys import AuditKey
from agentwall.audit.log import AuditLog
from agentwall.core import present
from agentwall.io.stdio_wrap import StdioWrap, WrapConfig, _Out, scrubbed
from agentwall.policy import load_policy
from agentwall.policy.secrets import mask_secrets
from agentwall.types import AuditEvent, Call, Decision, Identity

pytestmark = pytest.mark.timeout(60)

GITHUB_TOKEN = "ghp_" + "a1B2" * 9
F_SETPIPE_SZ = 1031


def test_scrubbed_masks_exactly_like_mask_secrets_and_its_cache_stays_bounded() -> None:
    too_long = "x" * (present._SCRUB_CACHE_MAX_LEN + 1)
    names = ["tools/call", "echo", f"file:///{GITHUB_TOKEN}", GITHUB_TOKEN, too_long]
    for _ in range(2):  # the second round is served from the cache
        for name in names:
            assert scrubbed(name) == mask_secrets(name)[0]
    assert scrubbed(GITHUB_TOKEN) == "[MASKED:github]"
    assert too_long not in present._scrub_cache  # long strings are not kept
    assert scrubbed(17) == 17
    assert scrubbed(None) is None
    for i in range(present._SCRUB_CACHE_SIZE + 10):
        scrubbed(f"tool-{i}")
    assert len(present._scrub_cache) <= present._SCRUB_CACHE_SIZE
    assert scrubbed(f"{GITHUB_TOKEN}") == "[MASKED:github]"


@pytest.fixture
def wrap(tmp_path: Path) -> Iterator[tuple[StdioWrap, AuditLog]]:
    log = AuditLog.open(tmp_path / "audit.log", AuditKey(bytes(range(32)), source="test"))
    w = StdioWrap(
        WrapConfig(command=("unused",), log_params=True), policy=load_policy(None), audit=log
    )
    try:
        yield w, log
    finally:
        log.close()


def _call(origin: str, identity: Identity | None) -> Call:
    return Call(
        call_id="s-1",
        session="s",
        transport="stdio",
        origin=origin,  # type: ignore[arg-type]
        kind="request",
        rpc_id=GITHUB_TOKEN,
        method="tools/call",
        target=f"run-{GITHUB_TOKEN}",
        params={"name": "run", "arguments": {"token": GITHUB_TOKEN}},
        params_json=b'{"arguments":{"token":"x"},"name":"run"}',
        identity=identity,
    )


@pytest.mark.parametrize("origin", ["client", "server"])
@pytest.mark.parametrize("with_identity", [False, True])
def test_the_decision_entry_has_every_field(
    wrap: tuple[StdioWrap, AuditLog], origin: str, with_identity: bool
) -> None:
    w, _ = wrap
    identity = Identity(subject="alice", issuer="https://idp") if with_identity else None
    decision = Decision(
        call_id="s-1",
        verdict="deny",
        rule_id="tools.run",
        reason="no",
        pointer="/arguments/token",
        policy_hash="ab" * 32,
        category="secret",
    )
    event = w._decision_event(_call(origin, identity), decision, "deny", 0)
    expected = AuditEvent(
        event="decision",
        session="s",
        transport="stdio",
        subject="alice" if with_identity else None,
        issuer="https://idp" if with_identity else None,
        call_id="s-1",
        rpc_id="[MASKED:github]",
        method="tools/call",
        target="run-[MASKED:github]",
        decision="deny",
        rule_id="tools.run",
        reason="no",
        pointer="/arguments/token",
        args_sha256=event.args_sha256,
        latency_us=event.latency_us,
        policy_hash="ab" * 32,
        params={"name": "run", "arguments": {"token": "[MASKED:github]"}},
        masked=("/arguments/token",),
        detail=None if origin == "client" else {"origin": "server"},
        category="secret",
    )
    assert event == expected
    assert event.args_sha256 is not None
    assert len(event.args_sha256) == 64


def _read_all(fd: int, into: bytearray, done: threading.Event) -> None:
    while chunk := os.read(fd, 65536):
        into += chunk
    done.set()


def test_out_writes_directly_and_overflows_into_the_transport_in_order() -> None:
    """A full pipe: what does not fit is handed to the transport, later lines
    queue behind it (never jump ahead), and every byte arrives in order."""
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, F_SETPIPE_SZ, 4096)
    lines = [b'{"n":%d,"pad":"%s"}' % (i, b"y" * (i % 300)) for i in range(2000)]
    received = bytearray()
    done = threading.Event()

    async def main() -> tuple[int, bool]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_write_pipe(
            asyncio.Protocol, os.fdopen(write_fd, "wb", buffering=0)
        )
        out = _Out(transport, write_fd)
        peak = 0
        for line in lines:
            assert out.write(line)
            peak = max(peak, out.buffered())
        reader = threading.Thread(target=_read_all, args=(read_fd, received, done))
        reader.start()
        while out.buffered():  # noqa: ASYNC110 -- a transport exposes a size, not an event
            await asyncio.sleep(0.01)
        out.close()
        await asyncio.sleep(0)
        reader.join(10)
        return peak, out.broken

    peak, broken = uvloop.run(main())
    os.close(read_fd)
    assert done.is_set()
    assert broken
    assert peak > 0, "the pipe never filled: the transport path was not exercised"
    assert bytes(received) == b"".join(line + b"\n" for line in lines)


def test_out_reports_a_closed_reader_at_once() -> None:
    read_fd, write_fd = os.pipe()

    async def main() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_write_pipe(
            asyncio.Protocol, os.fdopen(write_fd, "wb", buffering=0)
        )
        out = _Out(transport, write_fd)
        first = out.write(b"{}")
        os.close(read_fd)
        second = out.write(b"{}")  # EPIPE from the direct write
        out.close()
        return first, second

    assert uvloop.run(main()) == (True, False)


def _entries(log: AuditLog) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in log.path.read_bytes().splitlines()]


def test_responses_are_delivered_at_once_and_in_order_with_judged_messages(
    wrap: tuple[StdioWrap, AuditLog],
) -> None:
    w, log = wrap
    read_fd, write_fd = os.pipe()
    w._host = _Out(None, write_fd)
    progress = {
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {"progressToken": 1, "progress": 1},
    }

    def response(rpc_id: int) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": rpc_id, "result": {"content": []}}

    def chunk(*messages: dict[str, Any]) -> bytes:
        return b"".join(orjson.dumps(m) + b"\n" for m in messages)

    before = len(_entries(log))
    w._pending.update({1: "tools/call", 2: "tools/call", 3: "tools/call"})
    w._on_server_data(chunk(response(1)))  # alone: no entry, straight through
    assert len(_entries(log)) == before
    w._on_server_data(chunk(progress, response(2)))  # waits for the progress entry
    w._on_server_data(chunk(response(3), progress))
    os.close(write_fd)
    got = []
    with os.fdopen(read_fd, "rb") as f:
        got = [orjson.loads(line) for line in f]
    assert [m.get("id", m.get("method")) for m in got] == [
        1,
        "notifications/progress",
        2,
        3,
        "notifications/progress",
    ]
    entries = _entries(log)[before:]
    assert [e["method"] for e in entries] == ["notifications/progress"] * 2
    assert all(e["detail"] == {"origin": "server"} for e in entries)
