"""Who is calling: OIDC/JWT access-token verification, per-tool identity rules,
MCP authorization challenges and session binding.

Pure (no sockets, no event loop; the time is passed in).  The fetching of
discovery documents and key sets lives in ``agentwall.io.oidc``.
"""

from agentwall.identity.challenge import (
    AuthChallenge,
    authenticate,
    bearer_token,
    challenge_for,
    metadata_url,
    protected_resource_metadata,
    resource_url,
)
from agentwall.identity.config import IdentityConfig, coerce_identity_config
from agentwall.identity.jwks import JwksCache, JwksError, KeySetChange
from agentwall.identity.rules import (
    IdentityRefusal,
    IdentityRule,
    check_identity_rule,
    parse_identity_rule,
)
from agentwall.identity.session import SessionBinder
from agentwall.identity.verifier import TokenVerifier

__all__ = [
    "AuthChallenge",
    "IdentityConfig",
    "IdentityRefusal",
    "IdentityRule",
    "JwksCache",
    "JwksError",
    "KeySetChange",
    "SessionBinder",
    "TokenVerifier",
    "authenticate",
    "bearer_token",
    "challenge_for",
    "check_identity_rule",
    "coerce_identity_config",
    "metadata_url",
    "parse_identity_rule",
    "protected_resource_metadata",
    "resource_url",
]
