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
# The identity provider's keys are unknown or expired (issuer down too long):
# the request is refused, fail closed, but the caller's token is not at fault.
IDENTITY_UNAVAILABLE = -32009
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


class AuditEventError(AuditError):
    """One event cannot be turned into an entry (a value JSON cannot carry).
    Only that event's call is refused; the log itself is fine."""


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
    """A token that does not verify, or an identity rule that refuses.

    Each subclass knows the HTTP status and the RFC 6750 error code a client
    sees; ``www_authenticate`` renders the challenge header (MCP authorization,
    2025-11-25 and 2026-07-28).  ``reason`` is a short stable code for the
    audit log and metrics (``expired``, ``wrong_audience``, ...).
    """

    rpc_code = UNAUTHENTICATED
    http_status: int = 401
    # RFC 6750 section 3.1 error code; None when the request carried no
    # credentials at all (the RFC asks for a bare challenge then).
    oauth_error: str | None = "invalid_token"

    def __init__(self, message: str = "", *, reason: str = "invalid_token") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason

    def www_authenticate(
        self, resource_metadata: str | None = None, *, scope: str | None = None
    ) -> str:
        """The ``WWW-Authenticate`` value for this error (RFC 6750 section 3,
        RFC 9728 section 5.1).  Parameter values are quoted-strings; characters
        a quoted-string cannot carry are dropped from the description."""
        params: list[str] = []
        if resource_metadata:
            params.append(f'resource_metadata="{_quoted(resource_metadata)}"')
        if self.oauth_error:
            params.append(f'error="{self.oauth_error}"')
            if self.message:
                params.append(f'error_description="{_quoted(self.message)}"')
        if scope:
            params.append(f'scope="{_quoted(scope)}"')
        return "Bearer " + ", ".join(params) if params else "Bearer"


def _quoted(text: str) -> str:
    # RFC 6750 section 3: error_description and scope use %x20-21 / %x23-5B /
    # %x5D-7E; dropping '"', '\\' and controls keeps the header parseable.
    return "".join(ch for ch in text if 0x20 <= ord(ch) <= 0x7E and ch not in '"\\')[:300]


class AuthRequestInvalid(IdentityError):
    """The request's credentials are malformed as a request (two Authorization
    headers, a non-Bearer scheme with a token, a token in the query)."""

    http_status = 400
    oauth_error = "invalid_request"


class TokenMissing(IdentityError):
    """No credentials at all: a bare challenge, no error code (RFC 6750 3.1)."""

    oauth_error = None

    def __init__(self, message: str = "authentication required") -> None:
        super().__init__(message, reason="missing")


class TokenInvalid(IdentityError):
    """A token that does not verify: bad signature, expired, wrong issuer or
    audience, a disallowed algorithm.  ``reason`` says which."""


class UnknownKeyId(TokenInvalid):
    """The token names a key the issuer's key set does not have (after the one
    rate-limited refresh it is entitled to)."""

    def __init__(self, message: str, *, kid: str | None) -> None:
        super().__init__(message, reason="unknown_kid")
        self.kid = kid


class KeysUnavailable(IdentityError):
    """No usable keys: never fetched, or the cached set expired while the
    issuer was unreachable.  Fail closed with 503: the token is not at fault."""

    rpc_code = IDENTITY_UNAVAILABLE
    http_status = 503
    oauth_error = None

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="keys_unavailable")


class InsufficientScope(IdentityError):
    """A verified caller without the scopes or claims the call needs (403)."""

    rpc_code = FORBIDDEN
    http_status = 403
    oauth_error = "insufficient_scope"

    def __init__(
        self, message: str, *, required_scopes: tuple[str, ...] = (), reason: str = "scope"
    ) -> None:
        super().__init__(message, reason=reason)
        self.required_scopes = required_scopes

    def www_authenticate(
        self, resource_metadata: str | None = None, *, scope: str | None = None
    ) -> str:
        if scope is None and self.required_scopes:
            scope = " ".join(self.required_scopes)
        return super().www_authenticate(resource_metadata, scope=scope)


class SessionBindingError(IdentityError):
    """An ``Mcp-Session-Id`` presented by a subject other than the one that
    opened it (session hijacking).  A new token would not help: no challenge."""

    rpc_code = FORBIDDEN
    http_status = 403
    oauth_error = None

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="session_subject_mismatch")


class SignatureError(AgentwallError):
    """A policy signature that is missing, bad, untrusted or stale.

    ``reason`` is a stable machine-readable word (see docs/promote.md):
    unsigned, malformed, bad_signature, untrusted_key, stale, demo_key, key_file.
    """

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class ConfigError(AgentwallError):
    """Command-line or environment settings that do not make sense."""
