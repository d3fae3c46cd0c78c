"""agentwall.io.oidc against a real issuer on 127.0.0.1: discovery and JWKS
over real HTTP, real keys and signatures.  The clock the authenticator decides
with is a settable one (time is an input); every fetch is a real request the
test issuer counts."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from oidc_testkit import AUDIENCE, TestIssuer, claims, ec_key, ed25519_key, rsa_key, sign

from agentwall.errors import ConfigError, KeysUnavailable, TokenInvalid, TokenMissing, UnknownKeyId
from agentwall.identity import AuthChallenge, coerce_identity_config
from agentwall.io.oidc import (
    FetchError,
    OidcAuthenticator,
    OidcSettings,
    TokenFile,
    http_get,
    wrap_identity,
)
from agentwall.types import Identity

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def issuer() -> Iterator[TestIssuer]:
    server = TestIssuer([rsa_key("rsa-1"), ec_key("ec-1")]).start()
    yield server
    server.stop()


def make_auth(
    issuer: TestIssuer, clock: Clock, *, jwks_uri: str | None = None, **settings: Any
) -> OidcAuthenticator:
    config = coerce_identity_config(
        {"issuer": issuer.url, "audience": AUDIENCE, "jwks_uri": jwks_uri, "clock_skew_seconds": 5}
    )
    defaults: dict[str, Any] = {
        "refresh_interval": 300.0,
        "key_max_age": 3600.0,
        "unknown_kid_interval": 30.0,
        "fetch_timeout": 5.0,
    }
    return OidcAuthenticator(config, OidcSettings(**{**defaults, **settings}), clock=clock)


async def eventually(predicate: Callable[[], bool], limit: float = 20.0) -> None:
    """Poll (bounded) for something a background task does on its own."""
    for _ in range(int(limit / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)


async def started(auth: OidcAuthenticator) -> OidcAuthenticator:
    assert await auth.start(background=False)
    return auth


def test_discovery_then_jwks_then_valid_tokens(issuer: TestIssuer) -> None:
    async def scenario() -> list[Identity]:
        auth = await started(make_auth(issuer, Clock()))
        try:
            return [await auth.verify(issuer.token(key)) for key in issuer.keys]
        finally:
            await auth.aclose()

    identities = run(scenario())
    assert [i.subject for i in identities] == ["alice", "alice"]
    assert issuer.hits["/.well-known/openid-configuration"] == 1
    assert issuer.jwks_hits() == 1


def test_expired_wrong_iss_wrong_aud_and_nbf_over_http(issuer: TestIssuer) -> None:
    clock = Clock()

    async def scenario() -> list[str]:
        auth = await started(make_auth(issuer, clock))
        key = issuer.keys[0]
        reasons = []
        for overrides in (
            {"exp": int(clock.now) - 60},
            {"iss": "https://someone-else.example"},
            {"aud": "another-resource"},
            {"nbf": int(clock.now) + 600},
        ):
            with pytest.raises(TokenInvalid) as err:
                await auth.verify(sign(key, claims(issuer.url, clock.now, **overrides)))
            reasons.append(err.value.reason)
        await auth.aclose()
        return reasons

    assert run(scenario()) == ["expired", "wrong_issuer", "wrong_audience", "not_yet_valid"]


def test_unknown_kid_triggers_exactly_one_rate_limited_refresh(issuer: TestIssuer) -> None:
    clock = Clock()

    async def scenario() -> None:
        auth = await started(make_auth(issuer, clock, unknown_kid_interval=30.0))
        assert issuer.jwks_hits() == 1
        stranger = ed25519_key("stranger")
        # Many concurrent requests with unknown kids: one refresh between them.
        tokens = [sign(ed25519_key(f"stranger-{i}"), claims(issuer.url)) for i in range(20)]
        tokens.append(sign(stranger, claims(issuer.url)))
        results = await asyncio.gather(*(auth.verify(t) for t in tokens), return_exceptions=True)
        assert all(isinstance(r, UnknownKeyId) for r in results)
        assert issuer.jwks_hits() == 2
        assert auth.unknown_kid_refreshes == 1
        # Later, inside the interval: rejected without touching the issuer.
        clock.advance(10)
        with pytest.raises(UnknownKeyId):
            await auth.verify(sign(stranger, claims(issuer.url)))
        assert issuer.jwks_hits() == 2
        # The issuer publishes the key; after the interval the next unknown
        # kid buys one refresh and the token verifies.
        issuer.set_keys([*issuer.keys, stranger])
        clock.advance(25)
        assert (await auth.verify(sign(stranger, claims(issuer.url)))).subject == "alice"
        assert issuer.jwks_hits() == 3
        await auth.aclose()

    run(scenario())


def test_key_rotation_mid_run_old_key_removed(issuer: TestIssuer) -> None:
    clock = Clock()

    async def scenario() -> None:
        changes = []
        auth = make_auth(issuer, clock)
        auth._on_change = changes.append
        await started(auth)
        old = issuer.keys[0]
        old_token = sign(old, claims(issuer.url))
        assert (await auth.verify(old_token)).subject == "alice"
        assert (await auth.verify(old_token)).subject == "alice"  # cache hit
        assert auth.verifier.hits == 1
        new = rsa_key("rsa-2")
        issuer.set_keys([new, issuer.keys[1]])
        # The new key's token arrives before the scheduled refresh: the
        # unknown kid buys the refresh, which also evicts the old key.
        assert (await auth.verify(sign(new, claims(issuer.url)))).subject == "alice"
        with pytest.raises(UnknownKeyId):
            await auth.verify(old_token)  # was cached; its key is gone
        assert changes[-1].removed == ("rsa-1",)
        assert changes[-1].added == ("rsa-2",)
        await auth.aclose()

    run(scenario())


def test_background_refresh_picks_up_rotation(issuer: TestIssuer) -> None:
    async def scenario() -> None:
        # Real time here: the background task must run on its own.
        auth = make_auth(issuer, Clock(), refresh_interval=0.2)
        auth._clock = time.time
        assert await auth.start()
        old_token = issuer.token()
        assert (await auth.verify(old_token)).subject == "alice"
        issuer.set_keys([ec_key("ec-9")])
        await eventually(lambda: "rsa-1" not in auth.verifier.jwks.keys)
        assert "rsa-1" not in auth.verifier.jwks.keys
        assert "ec-9" in auth.verifier.jwks.keys
        with pytest.raises(UnknownKeyId):
            await auth.verify(old_token)
        await auth.aclose()

    run(scenario())


@pytest.mark.parametrize("outage", ["down", "error"])
def test_issuer_down_then_back(issuer: TestIssuer, outage: str) -> None:
    clock = Clock()

    async def scenario() -> None:
        auth = await started(make_auth(issuer, clock, key_max_age=600.0, refresh_interval=60.0))
        tok = issuer.token(exp=int(clock.now) + 7200)
        fresh = issuer.token(sub="bob", exp=int(clock.now) + 7200)
        assert (await auth.verify(tok)).subject == "alice"
        if outage == "down":
            issuer.stop()
        else:
            issuer.mode = "error"
        clock.advance(120)
        assert not await auth.refresh("scheduled")
        assert auth.fetch_failures == 1
        # Cached keys keep serving, for cached and new tokens alike.
        assert (await auth.verify(tok)).subject == "alice"
        assert (await auth.verify(fresh)).subject == "bob"
        assert auth.ready
        clock.advance(600)  # past key_max_age since the last good fetch
        with pytest.raises(KeysUnavailable):
            await auth.verify(tok)
        result = await auth.authenticate(f"Bearer {tok}", resource_metadata=None)
        assert isinstance(result, AuthChallenge)
        assert result.status == 503
        assert not auth.ready
        if outage == "down":
            issuer.start()  # same port
        else:
            issuer.mode = "ok"
        assert await auth.refresh("scheduled")
        assert (await auth.verify(tok)).subject == "alice"
        assert auth.ready
        await auth.aclose()

    run(scenario())


def test_issuer_down_at_startup_fails_closed_then_recovers(issuer: TestIssuer) -> None:
    async def scenario() -> None:
        port = issuer.port
        tok = issuer.token()
        issuer.stop()
        auth = make_auth(issuer, Clock(), retry_min=0.05, refresh_interval=0.5)
        auth._clock = time.time
        assert not await auth.start()
        result = await auth.authenticate(f"Bearer {tok}", resource_metadata=None)
        assert isinstance(result, AuthChallenge)
        assert result.status == 503
        issuer.port = port
        issuer.start()
        await eventually(lambda: auth.ready)
        assert isinstance(
            await auth.authenticate(f"Bearer {tok}", resource_metadata=None), Identity
        )
        await auth.aclose()

    run(scenario())


def test_discovery_issuer_mismatch_rejected(issuer: TestIssuer) -> None:
    issuer.advertised_issuer = "https://impostor.example"

    async def scenario() -> None:
        auth = make_auth(issuer, Clock())
        assert not await auth.start(background=False)
        assert "impostor" in (auth.verifier.jwks.last_error or "")
        with pytest.raises(KeysUnavailable):
            await auth.verify(issuer.token())
        await auth.aclose()

    run(scenario())


def test_rfc8414_fallback(issuer: TestIssuer) -> None:
    issuer.discovery_path = "/.well-known/oauth-authorization-server"

    async def scenario() -> None:
        auth = await started(make_auth(issuer, Clock()))
        assert (await auth.verify(issuer.token())).subject == "alice"
        await auth.aclose()

    run(scenario())
    assert issuer.hits["/.well-known/openid-configuration"] == 1  # tried first, 404


def test_jwks_uri_override_skips_discovery(issuer: TestIssuer) -> None:
    async def scenario() -> None:
        auth = await started(make_auth(issuer, Clock(), jwks_uri=issuer.url + "/jwks"))
        assert (await auth.verify(issuer.token())).subject == "alice"
        await auth.aclose()

    run(scenario())
    assert issuer.hits["/.well-known/openid-configuration"] == 0


def test_authenticate_header_paths(issuer: TestIssuer) -> None:
    async def scenario() -> list[Identity | AuthChallenge]:
        auth = await started(make_auth(issuer, Clock()))
        prm = "http://127.0.0.1/.well-known/oauth-protected-resource"
        out = [
            await auth.authenticate(f"Bearer {issuer.token()}", resource_metadata=prm),
            await auth.authenticate(None, resource_metadata=prm),
            await auth.authenticate("Bearer not-a-jwt", resource_metadata=prm),
        ]
        await auth.aclose()
        return out

    ok, missing, bad = run(scenario())
    assert isinstance(ok, Identity)
    assert isinstance(missing, AuthChallenge)
    assert missing.status == 401
    assert missing.www_authenticate == (
        'Bearer resource_metadata="http://127.0.0.1/.well-known/oauth-protected-resource"'
    )
    assert isinstance(bad, AuthChallenge)
    assert bad.status == 401
    assert bad.www_authenticate is not None
    assert 'error="invalid_token"' in bad.www_authenticate


def test_plain_http_only_for_loopback() -> None:
    with pytest.raises(ConfigError, match="https"):
        OidcAuthenticator(
            coerce_identity_config({"issuer": "http://auth.example.com", "audience": "a"})
        )
    OidcAuthenticator(
        coerce_identity_config({"issuer": "http://auth.example.com", "audience": "a"}),
        OidcSettings(unsafe_allow_http=True),
    )


def test_http_get_refuses_oversize_and_non_200(issuer: TestIssuer) -> None:
    async def scenario() -> None:
        with pytest.raises(FetchError, match="larger"):
            await http_get(issuer.url + "/jwks", fetch_timeout=5, max_bytes=10)
        with pytest.raises(FetchError, match="HTTP 404"):
            await http_get(issuer.url + "/nothing", fetch_timeout=5, max_bytes=10_000)

    run(scenario())


def test_http_get_times_out_on_silent_server() -> None:
    async def scenario() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await asyncio.sleep(30)
            finally:
                writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(FetchError, match="no answer"):
                await http_get(f"http://127.0.0.1:{port}/", fetch_timeout=0.3, max_bytes=100)
        finally:
            server.close()

    run(scenario())


def test_wrap_token_file_and_env(
    issuer: TestIssuer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "token"
    path.write_text(issuer.token() + "\n")

    async def scenario() -> None:
        auth = await started(make_auth(issuer, Clock()))
        source = TokenFile(path)
        assert (await wrap_identity(auth, source)).subject == "alice"
        # Rotated by an external refresher: re-read.
        path.write_text(issuer.token(sub="bob"))
        os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        assert (await wrap_identity(auth, source)).subject == "bob"
        path.write_text(issuer.token(aud="elsewhere"))
        os.utime(path, ns=(time.time_ns() + 2 * 10**9, time.time_ns() + 2 * 10**9))
        with pytest.raises(TokenInvalid, match="audience"):
            await wrap_identity(auth, source)
        monkeypatch.setenv("AGENTWALL_IDENTITY_TOKEN", issuer.token(sub="carol"))
        assert (await wrap_identity(auth, TokenFile(None))).subject == "carol"
        monkeypatch.delenv("AGENTWALL_IDENTITY_TOKEN")
        with pytest.raises(TokenMissing):
            await wrap_identity(auth, TokenFile(None))
        with pytest.raises(ConfigError):
            TokenFile(tmp_path / "missing").read()
        await auth.aclose()

    run(scenario())


def test_upstream_credentials(tmp_path: Path) -> None:
    from agentwall.io.oidc import UpstreamCredentials

    token_file = tmp_path / "upstream-token"
    token_file.write_text("upstream-secret-1\n")
    creds = UpstreamCredentials(["X-Api-Key: k1", "x-tenant:acme"], token_file)
    assert creds.headers() == [
        (b"x-api-key", b"k1"),
        (b"x-tenant", b"acme"),
        (b"authorization", b"Bearer upstream-secret-1"),
    ]
    token_file.write_text("upstream-secret-2")
    os.utime(token_file, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert creds.headers()[-1] == (b"authorization", b"Bearer upstream-secret-2")
    for bad in (
        "no-colon",
        "X-A: b\r\nInjected: 1",
        "Host: evil",
        "Mcp-Session-Id: x",
        "bad name: v",
    ):
        with pytest.raises(ConfigError):
            UpstreamCredentials([bad])
    with pytest.raises(ConfigError, match="clash"):
        UpstreamCredentials(["Authorization: Bearer x"], token_file)
    with pytest.raises(ConfigError):
        UpstreamCredentials([], tmp_path / "absent")


def test_reconfigure_keeps_or_refetches_keys(issuer: TestIssuer) -> None:
    clock = Clock()

    async def scenario() -> None:
        auth = await started(make_auth(issuer, clock))
        tok = issuer.token()
        await auth.verify(tok)
        same = coerce_identity_config(
            {"issuer": issuer.url, "audience": "another-audience", "clock_skew_seconds": 5}
        )
        await auth.reconfigure(same, class_claims=["groups"])
        assert issuer.jwks_hits() == 1  # keys reused
        with pytest.raises(TokenInvalid, match="audience"):
            await auth.verify(tok)  # not served from the old cache
        narrower = coerce_identity_config(
            {"issuer": issuer.url, "audience": AUDIENCE, "algorithms": ["ES256"]}
        )
        await auth.reconfigure(narrower)
        assert issuer.jwks_hits() == 2  # algorithms changed: keys re-fetched
        with pytest.raises(TokenInvalid, match="allow-list"):
            await auth.verify(tok)  # RS256 no longer allowed
        assert (await auth.verify(issuer.token(issuer.keys[1]))).subject == "alice"
        await auth.aclose()

    run(scenario())


def test_reconfigure_drops_a_fetch_in_flight_for_the_old_issuer(issuer: TestIssuer) -> None:
    other = TestIssuer([ed25519_key("other-1")]).start()
    try:

        async def scenario() -> None:
            auth = await started(make_auth(issuer, Clock()))
            issuer.mode = "slow"
            stale = asyncio.create_task(auth.refresh("scheduled"))  # old issuer, slow
            await asyncio.sleep(0.1)
            await auth.reconfigure(
                coerce_identity_config({"issuer": other.url, "audience": AUDIENCE})
            )
            assert stale.cancelled() or stale.done()
            # Only the new issuer's keys are in the new verifier.
            assert set(auth.verifier.jwks.keys) == {"other-1"}
            assert (await auth.verify(other.token())).issuer == other.url
            await auth.aclose()

        run(scenario())
    finally:
        issuer.mode = "ok"
        other.stop()
