"""Pure helpers for the HTTP layer: the ``Authorization`` header in, an
``Identity`` or an ``AuthChallenge`` out, and the RFC 9728 metadata document.

MCP authorization (2025-11-25, 2026-07-28) for a resource server:
- tokens arrive only as ``Authorization: Bearer`` (never in the query);
- no or invalid token: 401 with ``WWW-Authenticate: Bearer resource_metadata=...``
  pointing at ``/.well-known/oauth-protected-resource`` (RFC 9728 5.1);
- valid token without the needed scopes: 403 ``error="insufficient_scope"``
  with every scope the operation needs;
- the metadata document names the authorization server(s).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import msgspec

from agentwall.errors import (
    AuthRequestInvalid,
    IdentityError,
    InsufficientScope,
    TokenMissing,
)
from agentwall.identity.config import IdentityConfig
from agentwall.identity.rules import STEP_UP_CATEGORIES, IdentityRefusal
from agentwall.identity.verifier import MAX_TOKEN_BYTES, TokenVerifier
from agentwall.types import Decision, Identity

WELL_KNOWN_PRM = "/.well-known/oauth-protected-resource"

# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
# "+" / "/" ) *"="
_B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
# A Host header we are willing to echo into a URL and a header value.
_HOST = re.compile(r"(?:[A-Za-z0-9\-.]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


class AuthChallenge(msgspec.Struct, frozen=True):
    """What the front-end answers instead of forwarding: the HTTP status, the
    ``WWW-Authenticate`` value (None: send none), and the JSON-RPC error code
    and message for the body.  ``reason`` is the stable code for the audit log."""

    status: int
    www_authenticate: str | None
    rpc_code: int
    message: str
    reason: str


def bearer_token(authorization: str | bytes | Sequence[str | bytes] | None) -> bytes:
    """The token from ``Authorization`` value(s).  Raises ``TokenMissing`` when
    there is none, ``AuthRequestInvalid`` for several headers or a malformed
    one (RFC 6750 2.1 and 3.1)."""
    if authorization is None:
        raise TokenMissing()
    if isinstance(authorization, (list, tuple)):
        if not authorization:
            raise TokenMissing()
        if len(authorization) > 1:
            raise AuthRequestInvalid("more than one Authorization header", reason="malformed")
        authorization = authorization[0]
    value = (
        authorization.encode("latin-1", "replace")
        if isinstance(authorization, str)
        else authorization
    )
    assert isinstance(value, bytes)
    value = value.strip(b" \t")
    if not value:
        raise TokenMissing()
    scheme, _, token = value.partition(b" ")
    if scheme.lower() != b"bearer":
        # Another scheme (Basic, DPoP, ...) is not a credential we accept;
        # answer with the Bearer challenge rather than guessing.
        raise TokenMissing("only Bearer tokens are accepted")
    token = token.strip(b" ")
    if not token:
        raise AuthRequestInvalid("empty Bearer token", reason="malformed")
    if len(token) > MAX_TOKEN_BYTES or not _B64TOKEN.fullmatch(token):
        raise AuthRequestInvalid("malformed Bearer token", reason="malformed")
    return token


def challenge_for(error: IdentityError, resource_metadata: str | None) -> AuthChallenge:
    """The response an ``IdentityError`` turns into."""
    if error.http_status == 503 or (error.http_status == 403 and error.oauth_error is None):
        header = None  # nothing the client can fix with another token
    else:
        header = error.www_authenticate(resource_metadata)
    return AuthChallenge(
        status=error.http_status,
        www_authenticate=header,
        rpc_code=error.rpc_code,
        message=error.message or str(error),
        reason=error.reason,
    )


def challenge_for_refusal(
    refusal: IdentityRefusal, resource_metadata: str | None
) -> AuthChallenge | None:
    """403 + insufficient_scope for a refusal a better token could fix (missing
    scopes or claims); None for the rest, which get a plain JSON-RPC error."""
    if refusal.category not in STEP_UP_CATEGORIES:
        return None
    error = InsufficientScope(
        refusal.reason, required_scopes=refusal.required_scopes, reason=refusal.category
    )
    return challenge_for(error, resource_metadata)


def challenge_for_category(
    category: str | None, reason: str, required_scopes: Sequence[str], resource_metadata: str | None
) -> AuthChallenge | None:
    """Same as ``challenge_for_refusal`` from a deny ``Decision``'s fields."""
    if category is None:
        return None
    return challenge_for_refusal(
        IdentityRefusal(category=category, reason=reason, required_scopes=tuple(required_scopes)),
        resource_metadata,
    )


def challenge_for_decision(
    decision: Decision, resource_metadata: str | None
) -> AuthChallenge | None:
    """The HTTP answer for a policy decision: 403 + ``insufficient_scope`` (with
    every scope the call needs) when ``evaluate`` refused an identity rule a
    better token could satisfy; None for every other decision, which gets the
    ordinary JSON-RPC answer."""
    if decision.verdict != "deny":
        return None
    return challenge_for_category(
        decision.category, decision.reason, decision.required_scopes, resource_metadata
    )


def authenticate(
    verifier: TokenVerifier,
    authorization: str | bytes | Sequence[str | bytes] | None,
    now: float,
    *,
    resource_metadata: str | None,
) -> Identity | AuthChallenge:
    """Header in, identity or challenge out.  Never raises an ``IdentityError``.
    (The I/O shell wraps this to give an unknown kid its one refresh.)"""
    try:
        return verifier.verify(bearer_token(authorization), now)
    except IdentityError as error:
        return challenge_for(error, resource_metadata)


# -- RFC 9728 protected resource metadata ------------------------------------


def resource_url(
    config: IdentityConfig, *, scheme: str, host: str | bytes | None, path: str, fallback_host: str
) -> str:
    """The resource identifier for a request: ``identity.resource`` when set,
    else built from the Host header (when it is a plain host[:port]) and the
    MCP endpoint path (``/mcp``; ``/`` gives the bare origin)."""
    if config.resource:
        return config.resource
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not host or not _HOST.fullmatch(host):
        host = fallback_host
    path = "" if path in ("", "/") else path
    return f"{scheme}://{host}{path}"


def metadata_url(resource: str) -> str:
    """Where RFC 9728 section 3.1 puts the metadata for ``resource``:
    ``https://h/mcp`` -> ``https://h/.well-known/oauth-protected-resource/mcp``."""
    parts = urlsplit(resource)
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN_PRM}{path}"


def metadata_path_resource(request_path: str, mcp_paths: Sequence[str]) -> str | None:
    """For a GET on a well-known path, which MCP endpoint path it describes
    (``/.well-known/oauth-protected-resource`` -> ``/``,
    ``.../mcp`` -> ``/mcp``); None when it is not a metadata path we serve."""
    if request_path == WELL_KNOWN_PRM or request_path == WELL_KNOWN_PRM + "/":
        return "/"
    if request_path.startswith(WELL_KNOWN_PRM + "/"):
        sub = request_path[len(WELL_KNOWN_PRM) :]
        if sub in mcp_paths:
            return sub
    return None


def protected_resource_metadata(config: IdentityConfig, resource: str) -> dict[str, Any]:
    """The RFC 9728 document.  ``authorization_servers`` is required by MCP."""
    document: dict[str, Any] = {
        "resource": resource,
        "authorization_servers": [config.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "AgentWall MCP proxy",
    }
    if config.scopes_supported:
        document["scopes_supported"] = list(config.scopes_supported)
    return document
