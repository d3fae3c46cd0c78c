"""One error family.  Every part raises a subclass of ``AgentwallError``.

Each error knows how to describe itself to a person (``diagnostics``), which
process exit code it maps to, and which JSON-RPC error code a client sees.
"""

from __future__ import annotations

# JSON-RPC 2.0 standard codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# AgentWall's own codes (server-error range -32000..-32099).  Documented in
# docs/errors.md; never renumber.
POLICY_DENIED = -32001
AUDIT_UNAVAILABLE = -32002
EVALUATOR_UNAVAILABLE = -32003
UPSTREAM_UNAVAILABLE = -32004
UPSTREAM_TIMEOUT = -32005
OVERLOADED = -32006
UNAUTHENTICATED = -32007
FORBIDDEN = -32008
HEADER_MISMATCH = -32020  # MCP 2026-07-28 HeaderMismatch
UNSUPPORTED_PROTOCOL_VERSION = -32022  # MCP 2026-07-28
RATE_LIMITED = -32029

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class AgentwallError(Exception):
    """Base of every error AgentWall raises on purpose."""

    rpc_code: int = INTERNAL_ERROR
    exit_code: int = EXIT_USAGE

    def diagnostics(self) -> str:
        return str(self)


class FrameError(AgentwallError):
    """Bytes that cannot be framed or parsed as one JSON-RPC message."""

    rpc_code = PARSE_ERROR

    def __init__(
        self,
        message: str,
        *,
        rpc_code: int = PARSE_ERROR,
        rpc_id: int | str | None = None,
    ) -> None:
        super().__init__(message)
        self.rpc_code = rpc_code
        # The offending request's id when it could be read (so the error
        # response can be matched by the client); None otherwise, as JSON-RPC
        # prescribes for unreadable requests.
        self.rpc_id = rpc_id


class PolicyError(AgentwallError):
    """A policy that will not load.  Carries file:line:column when known."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        column: int | None = None,
        key: str | None = None,
        suggestion: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.column = column
        self.key = key
        self.suggestion = suggestion

    def diagnostics(self) -> str:
        where = self.path or "<policy>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.message}"
        if self.key:
            text += f" (key: {self.key})"
        if self.suggestion:
            text += f"; did you mean {self.suggestion!r}?"
        return text


class AuditError(AgentwallError):
    """The audit log could not be written durably."""

    rpc_code = AUDIT_UNAVAILABLE


class AuditChainError(AgentwallError):
    """A chain that does not verify.  ``seq`` is the first bad entry."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, seq: int | None, kind: str) -> None:
        super().__init__(message)
        self.seq = seq
        self.kind = kind


class EvaluatorError(AgentwallError):
    """No evaluator could give a decision in time."""

    rpc_code = EVALUATOR_UNAVAILABLE


class UpstreamError(AgentwallError):
    rpc_code = UPSTREAM_UNAVAILABLE


class IdentityError(AgentwallError):
    """A token that does not verify, or an identity rule that refuses."""

    rpc_code = UNAUTHENTICATED


class SignatureError(AgentwallError):
    """A policy signature that is missing, bad, untrusted or stale."""


class ConfigError(AgentwallError):
    """Command-line or environment settings that do not make sense."""
