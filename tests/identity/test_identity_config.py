from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from agentwall.errors import ConfigError
from agentwall.identity import IdentityConfig, coerce_identity_config

BASE: dict[str, Any] = {"issuer": "https://auth.example.com", "audience": "agentwall-proxy"}


def test_defaults() -> None:
    cfg = coerce_identity_config(BASE)
    assert cfg.audience == ("agentwall-proxy",)
    assert cfg.algorithms == ("RS256", "ES256", "EdDSA")
    assert cfg.clock_skew_seconds == 60.0
    assert cfg.jwks_uri is None


def test_accepts_policy_object_and_struct_shapes() -> None:
    # The policy part exposes Policy.identity as an object with these
    # attributes; a Struct of ours or a mapping work the same.
    obj = SimpleNamespace(
        issuer="https://auth.example.com",
        audience=["a", "b"],
        jwks_uri=None,
        algorithms=["ES256"],
        required_claims={"tenant": "acme"},
        clock_skew_seconds=5,
    )
    cfg = coerce_identity_config(obj)
    assert cfg.audience == ("a", "b")
    assert cfg.algorithms == ("ES256",)
    assert coerce_identity_config(cfg) == cfg
    assert isinstance(cfg, IdentityConfig)


def test_issuer_override() -> None:
    cfg = coerce_identity_config(BASE, issuer_override="http://127.0.0.1:9999")
    assert cfg.issuer == "http://127.0.0.1:9999"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"algorithms": ["HS256"]}, "key confusion"),
        ({"algorithms": ["RS256", "none"]}, "never accepted"),
        ({"algorithms": []}, "non-empty"),
        ({"algorithms": ["RS1"]}, "supported"),
        ({"audience": None}, "audience"),
        ({"audience": [""]}, "audience"),
        ({"issuer": ""}, "issuer"),
        ({"issuer": "auth.example.com"}, "http"),
        ({"clock_skew_seconds": -1}, "clock_skew"),
        ({"clock_skew_seconds": True}, "clock_skew"),
        ({"required_claims": {"groups": []}}, "required_claims.groups"),
        ({"required_claims": ["groups"]}, "required_claims"),
        ({"jwks_uri": "file:///etc/passwd"}, "jwks_uri"),
        ({"issuerr": "x"}, "unknown"),
    ],
)
def test_rejects_bad_settings(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        coerce_identity_config({**BASE, **change})
