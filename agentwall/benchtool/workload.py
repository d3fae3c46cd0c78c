"""The request mix every benchmark sends.

A realistic agent session is mostly small allowed tool calls, some large
arguments (file contents, pasted documents), a few calls the policy refuses,
and the occasional ``tools/list``.  The ``echo`` calls (62% of the mix) carry
a per-call unique prefix, so they can never be served from a decision cache:
real arguments vary.  The other kinds repeat exactly (an agent re-reading the
same file, re-running a search, or retrying a refused call), so a cache can
help there; the bench reports the hit rate it actually saw.  Each kind says what the policy is
expected to do with it (``expect``), so a run can tell an intended denial from
a misconfigured proxy.  Argument text is plain words: a high-entropy filler
would trip secret scanning and turn "allowed" calls into denials.

The bodies target the built-in upstream's tools (``agentwall.demo.mcp_logic``)
and the bench policy (``agentwall/data/bench-policy.yaml``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

Expect = Literal["allow", "deny", "list"]

_SENTENCE: Final = (
    "the quick brown fox jumps over a lazy dog while seven agents read files "
    "and write short notes about the weather in small towns near rivers"
)
_WORDS: Final = tuple(_SENTENCE.split(" "))


def filler(size: int) -> str:
    """Plain English-looking text of exactly ``size`` characters."""
    out: list[str] = []
    total = 0
    i = 0
    while total < size:
        word = _WORDS[i % len(_WORDS)]
        out.append(word)
        total += len(word) + 1
        i += 1
    return " ".join(out)[:size]


UNIQUE: Final = "@@unique@@"


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of request in the mix.

    ``tail`` is the JSON body after ``{"jsonrpc":"2.0","id":N,``, so that the
    per-request id (and, for unique kinds, a tag) is all that is built at send
    time.  A unique kind's tail is split where ``UNIQUE`` was: the tag and the
    id go there.
    """

    name: str
    expect: Expect
    weight: int
    tail: bytes
    rest: bytes | None = None

    def body(self, rpc_id: int, tag: bytes = b"") -> bytes:
        if self.rest is None:
            return b'{"jsonrpc":"2.0","id":%d,%s' % (rpc_id, self.tail)
        return b'{"jsonrpc":"2.0","id":%d,%s%s.%d %s' % (rpc_id, self.tail, tag, rpc_id, self.rest)


def _unique(name: str, expect: Expect, weight: int, tail: bytes) -> Kind:
    marker = UNIQUE.encode()
    head, found, rest = tail.partition(marker)
    assert found, "a unique kind needs the UNIQUE marker in its arguments"
    return Kind(name, expect, weight, head, rest)


def _tail(method: str, params: dict[str, Any] | None) -> bytes:
    message: dict[str, Any] = {"method": method}
    if params is not None:
        message["params"] = params
    encoded = orjson.dumps(message)
    assert encoded.startswith(b"{")
    return encoded[1:]


def _tool(name: str, **arguments: Any) -> bytes:
    return _tail("tools/call", {"name": name, "arguments": arguments})


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    kinds: tuple[Kind, ...]

    def schedule(self, seed: int, length: int = 200) -> list[int]:
        """A deterministic shuffled cycle of kind indexes with the mix's weights."""
        total = sum(k.weight for k in self.kinds)
        cycle: list[int] = []
        for index, kind in enumerate(self.kinds):
            cycle.extend([index] * round(kind.weight * length / total))
        random.Random(seed).shuffle(cycle)  # noqa: S311 - a reproducible order, not a secret
        return cycle

    def index(self, name: str) -> int:
        for i, kind in enumerate(self.kinds):
            if kind.name == name:
                return i
        raise KeyError(name)


def default_mix() -> Workload:
    """80% allowed calls (tiny to 64 KiB), 12% denied, 8% ``tools/list``."""
    kinds = (
        _unique("echo_tiny", "allow", 40, _tool("echo", text=UNIQUE + "hello")),
        _unique("echo_1k", "allow", 14, _tool("echo", text=UNIQUE + filler(1024))),
        _unique("echo_8k", "allow", 6, _tool("echo", text=UNIQUE + filler(8 * 1024))),
        _unique("echo_64k", "allow", 2, _tool("echo", text=UNIQUE + filler(64 * 1024))),
        Kind("search", "allow", 12, _tool("search", query="mcp proxy latency", limit=3)),
        Kind("read_file", "allow", 6, _tool("read_file", path="/workspace/notes/today.md")),
        Kind("deny_tool", "deny", 6, _tool("run_command", command="ls -la /")),
        Kind("deny_path", "deny", 4, _tool("read_file", path="/workspace/../../etc/passwd")),
        Kind("deny_ssrf", "deny", 2, _tool("fetch_url", url="http://169.254.169.254/latest/")),
        Kind("tools_list", "list", 8, _tail("tools/list", None)),
    )
    return Workload("default", kinds)


def only(kind_name: str) -> Workload:
    """A workload of one kind of the default mix (for focused micro runs)."""
    mix = default_mix()
    kind = mix.kinds[mix.index(kind_name)]
    return Workload(kind_name, (kind,))


WORKLOADS: Final = ("default", "echo_tiny", "echo_64k", "tools_list", "deny_tool")


def by_name(name: str) -> Workload:
    return default_mix() if name == "default" else only(name)


INITIALIZE: Final = _tail(
    "initialize",
    {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "agentwall-bench", "version": "1"},
    },
)
INITIALIZED_NOTIFICATION: Final = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
PROTOCOL_VERSION: Final = "2025-11-25"
