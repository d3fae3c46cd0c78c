"""The I/O shell around ``agentwall.identity``: discovery, key-set fetching on a
schedule and on demand, and the async ``authenticate`` the front-ends call.

- Start-up: OIDC discovery at ``{issuer}/.well-known/openid-configuration``
  (RFC 8414 ``/.well-known/oauth-authorization-server`` as the fallback),
  whose ``issuer`` must equal the configured one exactly; then the JWKS.
  ``identity.jwks_uri`` skips discovery.
- Background: the key set is re-fetched every ``refresh_interval``; failures
  retry with exponential backoff.  A token whose ``kid`` is unknown may
  trigger one refresh per ``unknown_kid_interval`` (concurrent requests share
  one in-flight fetch); after it, the token is rejected.
- Issuer down: the cached keys keep working until ``key_max_age`` after the
  last successful fetch; then every request fails closed (503, ``KeysUnavailable``)
  until a fetch succeeds.
- HTTP: asyncio streams + h11, TLS through ``ssl`` for https.  Plain http is
  accepted only for loopback issuers (tests, local IdPs) unless
  ``unsafe_allow_http`` is set.  Redirects are not followed; bodies are capped.

Several processes: keys live in whichever process verifies tokens.  In
``agentwall start`` that is the single front-end process (workers only see the
verified ``Identity`` inside a ``Call``), so there is one cache and one
schedule.  Were several front-ends run (several ``start`` instances behind a
balancer), each keeps its own ``OidcAuthenticator``: correctness does not
depend on sharing, because every process refreshes on its own schedule, evicts
removed keys on its own refresh, and rate-limits its own unknown-kid fetches;
the issuer then sees at most one scheduled and one unknown-kid fetch per
interval per process, and a removed key stops verifying everywhere within one
``refresh_interval``.  See docs/identity.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import json
import logging
import os
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import h11
import msgspec

from agentwall.core.mcp_http import HttpReply, RequestMeta, rpc_error_reply
from agentwall.errors import AuditError, ConfigError, IdentityError, TokenMissing, UnknownKeyId
from agentwall.identity.challenge import (
    AuthChallenge,
    bearer_token,
    challenge_for,
    challenge_for_decision,
    metadata_path_resource,
    metadata_url,
    protected_resource_metadata,
    resource_url,
)
from agentwall.identity.config import IdentityConfig
from agentwall.identity.jwks import JwksCache, JwksError, KeySetChange
from agentwall.identity.session import SessionBinder
from agentwall.identity.verifier import TokenVerifier
from agentwall.io.contracts import AuditSink
from agentwall.io.upstream import Headers, UpstreamPool, UpstreamResponse
from agentwall.types import AuditEvent, Decision, Identity

log = logging.getLogger("agentwall.identity")

_REQUEST_METADATA_URL: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "agentwall_request_metadata_url", default=None
)

# The name of the variable, not a secret.
DEFAULT_TOKEN_ENV = "AGENTWALL_IDENTITY_TOKEN"  # noqa: S105


class OidcSettings(msgspec.Struct, frozen=True):
    """Timing and transport knobs (seconds).  Defaults suit a production IdP."""

    refresh_interval: float = 300.0
    key_max_age: float = 3600.0
    unknown_kid_interval: float = 30.0
    retry_min: float = 1.0
    fetch_timeout: float = 5.0
    max_document_bytes: int = 512 * 1024
    # http:// issuers that are not loopback: tokens could be verified against
    # keys an on-path attacker served.  Off unless the operator says so.
    unsafe_allow_http: bool = False


class FetchError(Exception):
    """A discovery or key-set fetch that did not produce a usable document."""


class HttpAuthenticator(Protocol):
    """What the HTTP front-end's optional authenticator hook calls."""

    async def authenticate(
        self,
        authorization: str | bytes | Sequence[str | bytes] | None,
        *,
        resource_metadata: str | None,
    ) -> Identity | AuthChallenge: ...


class OidcAuthenticator:
    """One issuer's keys and a ``TokenVerifier`` over them, kept fresh."""

    def __init__(
        self,
        config: IdentityConfig,
        settings: OidcSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        ssl_context: ssl.SSLContext | None = None,
        class_claims: Sequence[str] | None = None,
        subject_in_class: bool = True,
        on_change: Callable[[KeySetChange], None] | None = None,
    ) -> None:
        self.config = config
        self.settings = settings or OidcSettings()
        self._clock = clock
        self._ssl = ssl_context
        self._on_change = on_change
        self._subject_in_class = subject_in_class
        jwks = JwksCache(
            config.algorithms,
            max_age=self.settings.key_max_age,
            refresh_interval=self.settings.refresh_interval,
            unknown_kid_interval=self.settings.unknown_kid_interval,
        )
        self.verifier = TokenVerifier(
            config, jwks, class_claims=class_claims, subject_in_class=subject_in_class
        )
        for url in filter(None, (config.issuer, config.jwks_uri)):
            _check_url(url, self.settings.unsafe_allow_http)
        self.jwks_uri: str | None = config.jwks_uri
        self._inflight: asyncio.Task[bool] | None = None
        self._background: asyncio.Task[None] | None = None
        self._failures = 0
        # Counters for /metrics and for tests that assert on issuer traffic.
        self.fetches = 0
        self.fetch_failures = 0
        self.unknown_kid_refreshes = 0

    # -- lifecycle ---------------------------------------------------------

    async def start(self, *, background: bool = True) -> bool:
        """Fetch the keys once, then keep them fresh in the background.
        Returns whether keys were loaded; when not, requests get 503 until a
        background retry succeeds (``ready`` says which)."""
        ok = await self.refresh("startup")
        if background and self._background is None:
            self._background = asyncio.create_task(self._run(), name="agentwall-jwks-refresh")
        return ok

    async def aclose(self) -> None:
        for task in (self._background, self._inflight):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._background = None
        self._inflight = None

    async def reconfigure(
        self, config: IdentityConfig, *, class_claims: Sequence[str] | None = None
    ) -> None:
        """A reloaded policy (SIGHUP): a fresh verifier (empty token cache, so
        nothing verified under the old rules survives).  The key set is kept
        when the issuer, key URL and algorithms are unchanged, otherwise it is
        fetched anew before this returns (failing closed meanwhile)."""
        same_keys = (
            config.issuer == self.config.issuer
            and config.jwks_uri == self.config.jwks_uri
            and config.algorithms == self.config.algorithms
        )
        for url in filter(None, (config.issuer, config.jwks_uri)):
            _check_url(url, self.settings.unsafe_allow_http)
        old = self.verifier.jwks
        jwks = (
            old
            if same_keys
            else JwksCache(
                config.algorithms,
                max_age=old.max_age,
                refresh_interval=old.refresh_interval,
                unknown_kid_interval=old.unknown_kid_interval,
            )
        )
        self.config = config
        self.verifier = TokenVerifier(
            config, jwks, class_claims=class_claims, subject_in_class=self._subject_in_class
        )
        if not same_keys:
            # A fetch in flight is for the old issuer or algorithms: drop it.
            inflight = self._inflight
            if inflight is not None and not inflight.done():
                inflight.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await inflight
            self._inflight = None
            self.jwks_uri = config.jwks_uri
            await self.refresh("reconfigure")

    @property
    def ready(self) -> bool:
        return self.verifier.jwks.usable(self._clock())

    def clock(self) -> float:
        return self._clock()

    # -- verification ------------------------------------------------------

    async def verify(self, token: str | bytes) -> Identity:
        """``TokenVerifier.verify`` plus the unknown-kid refresh.  Raises
        ``IdentityError``."""
        try:
            return self.verifier.verify(token, self._clock())
        except UnknownKeyId:
            granted = self.verifier.jwks.claim_unknown_kid_refresh(self._clock())
            if not granted and self._inflight is None:
                raise
            if granted:
                self.unknown_kid_refreshes += 1
            await self.refresh("unknown_kid")
            # A second miss propagates: one refresh per token, then reject.
            return self.verifier.verify(token, self._clock())

    async def authenticate(
        self,
        authorization: str | bytes | Sequence[str | bytes] | None,
        *,
        resource_metadata: str | None,
    ) -> Identity | AuthChallenge:
        """``Authorization`` header value(s) in; an ``Identity`` or the 400/401/
        403/503 challenge to answer with out.  Never raises IdentityError."""
        try:
            return await self.verify(bearer_token(authorization))
        except IdentityError as error:
            return challenge_for(error, resource_metadata)

    # -- fetching ----------------------------------------------------------

    async def refresh(self, reason: str = "manual") -> bool:
        """Fetch the key set now (sharing a fetch already in flight).  Returns
        whether it succeeded; on failure the cached keys stay until they
        expire."""
        task = self._inflight
        if task is None or task.done():
            task = asyncio.create_task(self._refresh_once(reason), name="agentwall-jwks-fetch")
            self._inflight = task
        # shield: a caller that gives up (client disconnect) does not cancel
        # the fetch the others are waiting for.
        return await asyncio.shield(task)

    async def _refresh_once(self, reason: str) -> bool:
        # Keys land in the verifier this fetch was started for: a fetch that
        # began under a previous configuration never feeds the current one.
        verifier = self.verifier
        try:
            if self.jwks_uri is None:
                self.jwks_uri = await self._discover()
            self.fetches += 1
            body = await self._get(self.jwks_uri)
            change = verifier.load_jwks(body, self._clock())
        except (FetchError, JwksError) as exc:
            self.fetch_failures += 1
            self._failures += 1
            verifier.jwks.fetch_failed(self._clock(), str(exc))
            log.warning("identity: key-set fetch (%s) failed: %s", reason, exc)
            return False
        finally:
            if self._inflight is asyncio.current_task():
                self._inflight = None
        self._failures = 0
        for kid, why in change.skipped:
            log.warning("identity: key %r in the issuer's key set ignored: %s", kid, why)
        if change.added or change.removed:
            log.info(
                "identity: key set changed (%s): added %s, removed %s",
                reason,
                list(change.added),
                list(change.removed),
            )
            if self._on_change is not None:
                self._on_change(change)
        return True

    async def _discover(self) -> str:
        issuer = self.config.issuer
        parts = urlsplit(issuer)
        path = parts.path.rstrip("/")
        origin = f"{parts.scheme}://{parts.netloc}"
        candidates = [
            issuer.rstrip("/") + "/.well-known/openid-configuration",
            f"{origin}/.well-known/oauth-authorization-server{path}",
        ]
        errors: list[str] = []
        for url in candidates:
            self.fetches += 1
            try:
                body = await self._get(url)
            except FetchError as exc:
                errors.append(str(exc))
                continue
            try:
                document = json.loads(body)
            except ValueError:
                raise FetchError(f"{url}: discovery document is not JSON") from None
            if not isinstance(document, dict):
                raise FetchError(f"{url}: discovery document is not a JSON object")
            # OIDC Discovery 4.3 / RFC 8414 3.3: the document must name the
            # issuer we asked about, or it is someone else's.
            if document.get("issuer") != issuer:
                raise FetchError(
                    f"{url}: discovery names issuer {document.get('issuer')!r}, expected {issuer!r}"
                )
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise FetchError(f"{url}: discovery document has no jwks_uri")
            try:
                _check_url(jwks_uri, self.settings.unsafe_allow_http)
            except ConfigError as exc:
                raise FetchError(f"{url}: {exc}") from None
            return jwks_uri
        raise FetchError("discovery failed: " + "; ".join(errors))

    async def _get(self, url: str) -> bytes:
        try:
            return await http_get(
                url,
                fetch_timeout=self.settings.fetch_timeout,
                max_bytes=self.settings.max_document_bytes,
                ssl_context=self._ssl,
            )
        except FetchError:
            raise
        except (OSError, h11.ProtocolError, TimeoutError, ValueError) as exc:
            raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from None

    async def _run(self) -> None:
        settings = self.settings
        while True:
            jwks = self.verifier.jwks
            if self._failures:
                base = jwks.last_attempt_at or self._clock()
                backoff = settings.retry_min * 2 ** min(self._failures - 1, 16)
                due = base + min(backoff, settings.refresh_interval)
            else:
                due = jwks.next_refresh_at()
            delay = due - self._clock()
            if delay > 0:
                await asyncio.sleep(min(delay, settings.refresh_interval))
                continue
            try:
                await self.refresh("scheduled")
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive any surprise
                log.exception("identity: scheduled key-set refresh crashed")
                self._failures += 1


async def http_get(
    url: str, *, fetch_timeout: float, max_bytes: int, ssl_context: ssl.SSLContext | None = None
) -> bytes:
    """GET ``url`` and return the 200 body.  Raises ``FetchError`` for any other
    status (redirects included), oversize bodies and timeouts."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"{url}: not an http(s) URL")
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    context = ssl_context or (ssl.create_default_context() if https else None)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(fetch_timeout):
            reader, writer = await asyncio.open_connection(
                parts.hostname,
                port,
                ssl=context if https else None,
                server_hostname=parts.hostname if https else None,
            )
            conn = h11.Connection(h11.CLIENT)
            writer.write(
                conn.send(
                    h11.Request(
                        method="GET",
                        target=target,
                        headers=[
                            ("Host", parts.netloc),
                            ("Accept", "application/json"),
                            ("User-Agent", "agentwall-oidc"),
                            ("Connection", "close"),
                        ],
                    )
                )
            )
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            status = 0
            body = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Response):
                    status = event.status_code
                    for name, value in event.headers:
                        if name == b"content-length" and int(value) > max_bytes:
                            raise FetchError(f"{url}: body larger than {max_bytes} bytes")
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > max_bytes:
                        raise FetchError(f"{url}: body larger than {max_bytes} bytes")
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
    except TimeoutError:
        raise FetchError(f"{url}: no answer within {fetch_timeout:g}s") from None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
    if status != 200:
        raise FetchError(f"{url}: HTTP {status}")
    return bytes(body)


def _check_url(url: str, unsafe_allow_http: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and (unsafe_allow_http or _is_loopback(parts.hostname or "")):
        return
    raise ConfigError(
        f"{url}: identity provider URLs must be https (http is accepted for loopback only, "
        "or with unsafe_allow_http)"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TokenFile:
    """The token ``agentwall wrap`` presents for its stdio session: read from
    ``--identity-token-file`` (re-read when the file changes, so an external
    refresher can rotate it) or from an environment variable."""

    def __init__(self, path: str | os.PathLike[str] | None, env: str = DEFAULT_TOKEN_ENV) -> None:
        self.path = None if path is None else Path(path)
        self.env = env
        self._stamp: tuple[int, int] | None = None
        self._token: bytes | None = None

    def configured(self) -> bool:
        return self.path is not None or bool(os.environ.get(self.env))

    def read(self) -> bytes:
        """The current token.  Raises ``IdentityError`` (TokenMissing) when
        neither source has one; ``OSError`` from the file propagates as a
        ``ConfigError``."""
        if self.path is None:
            value = os.environ.get(self.env, "").strip()
            if not value:
                raise TokenMissing(f"no identity token in ${self.env}")
            return value.encode("ascii", "replace")
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp or self._token is None:
                self._token = self.path.read_bytes().strip()
                self._stamp = stamp
        except OSError as exc:
            raise ConfigError(f"--identity-token-file {self.path}: {exc.strerror}") from None
        return self._token


async def wrap_identity(authenticator: OidcAuthenticator, source: TokenFile) -> Identity:
    """The identity of a ``wrap`` session, checked per call (a cache hit while
    the token is unchanged and unexpired).  Raises ``IdentityError``."""
    return await authenticator.verify(source.read())


class WrapIdentity:
    """The identity of an ``agentwall wrap`` session (issue 6, stdio).

    ``start()`` fetches the issuer's keys and verifies the token once: a token
    that does not verify stops ``wrap`` before the server runs.  The wrapper's
    data path is synchronous, so ``__call__(now_ns)`` verifies without
    awaiting: a cache hit while the token is unchanged and unexpired, a full
    verification when the file changed.  An unknown kid (the key rotated under
    a renewed token) schedules the rate-limited refresh in the background and
    refuses this call; the next one verifies against the refreshed keys.
    """

    def __init__(self, authenticator: OidcAuthenticator, source: TokenFile) -> None:
        self.authenticator = authenticator
        self.source = source
        self._refreshing: asyncio.Task[bool] | None = None

    async def start(self) -> Identity:
        await self.authenticator.start()
        return await wrap_identity(self.authenticator, self.source)

    def __call__(self, now_ns: int) -> Identity:
        auth = self.authenticator
        try:
            return auth.verifier.verify(self.source.read(), now_ns / 1e9)
        except UnknownKeyId:
            if auth.verifier.jwks.claim_unknown_kid_refresh(auth.clock()):
                auth.unknown_kid_refreshes += 1
                self._refreshing = asyncio.get_running_loop().create_task(
                    auth.refresh("unknown_kid")
                )
            raise

    async def aclose(self) -> None:
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refreshing
        await self.authenticator.aclose()


_HEADER_NAME_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
# Headers the proxy owns on the upstream leg; credentials may not override them.
_RESERVED_UPSTREAM = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"mcp-session-id",
     b"mcp-protocol-version", b"mcp-method", b"mcp-name", b"content-type", b"accept"}
)  # fmt: skip


class UpstreamCredentials:
    """The proxy's own credentials for the upstream MCP server.

    The client's token never goes upstream (MCP authorization: "MUST NOT pass
    through the token it received"); when the upstream needs authentication,
    the operator gives the proxy its own, with ``--upstream-header "Name:
    value"`` (repeatable) and/or ``--upstream-token-file F`` (sent as
    ``Authorization: Bearer <content>``, re-read when the file changes).
    """

    def __init__(
        self, headers: Sequence[str] = (), token_file: str | os.PathLike[str] | None = None
    ) -> None:
        self._static: list[tuple[bytes, bytes]] = [parse_upstream_header(h) for h in headers]
        names = [name for name, _ in self._static]
        if token_file is not None and b"authorization" in names:
            raise ConfigError("--upstream-token-file and an Authorization --upstream-header clash")
        self._token = None if token_file is None else TokenFile(token_file)
        if self._token is not None:
            self._token.read()  # fail at start-up, not on the first call

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Headers to add to every upstream request (names lower-case)."""
        out = list(self._static)
        if self._token is not None:
            token = self._token.read()
            if not token or b"\r" in token or b"\n" in token:
                raise ConfigError("--upstream-token-file: empty or multi-line token")
            out.append((b"authorization", b"Bearer " + token))
        return out


class CredentialedUpstreamPool(UpstreamPool):
    """An ``UpstreamPool`` that adds the proxy's own upstream credentials to
    every request it sends (POST, the GET stream, DELETE, refusals returned to
    the server).  The client's ``Authorization`` never reaches this point: the
    front-end drops it when it reads the request (``mcp_http``)."""

    def __init__(self, url: str, *, credentials: UpstreamCredentials, **options: Any) -> None:
        super().__init__(url, **options)
        self.credentials = credentials

    async def request(
        self, method: bytes, headers: Headers, body: bytes = b"", *, head_timeout: float
    ) -> UpstreamResponse:
        return await super().request(
            method, [*headers, *self.credentials.headers()], body, head_timeout=head_timeout
        )


def parse_upstream_header(text: str) -> tuple[bytes, bytes]:
    """``"Name: value"`` -> (b"name", b"value"); refuses what would break
    framing or let a credential override the proxy's own headers."""
    name, sep, value = text.partition(":")
    raw_name = name.strip().lower().encode("ascii", "replace")
    raw_value = value.strip().encode("latin-1", "replace")
    if not sep or not raw_name or not _HEADER_NAME_CHARS.issuperset(raw_name):
        raise ConfigError(f"--upstream-header {text!r}: expected 'Name: value'")
    if any((c < 0x20 and c != 0x09) or c == 0x7F for c in raw_value):
        raise ConfigError(f"--upstream-header {name.strip()}: control characters in the value")
    if raw_name in _RESERVED_UPSTREAM:
        raise ConfigError(f"--upstream-header {name.strip()}: set by the proxy itself")
    return raw_name, raw_value


class HttpIdentityGate:
    """The HTTP front-end's authenticator hook (``http_front.Authenticator``):
    Bearer tokens in, an ``Identity`` or the reply to send out; the RFC 9728
    metadata endpoints; ``Mcp-Session-Id`` bound to the subject that opened it.

    - ``authenticate(meta, peer)``: 401 (no or bad token, with
      ``WWW-Authenticate: Bearer resource_metadata=...``), 403 (required
      claims; a session opened by another subject), 503 (no usable keys).
      Every refusal is written to the audit log (when a sink is given) before
      the reply goes out, with the reason code and never the token.
    - ``serve(method, path, host)``: ``/.well-known/oauth-protected-resource``
      (resource = the proxy's origin, which covers ``/`` and ``/mcp``) and
      ``/.well-known/oauth-protected-resource/mcp`` (resource = ``.../mcp``).
    - ``challenge_for(decision)``: 403 ``insufficient_scope`` for an identity
      rule a better token could satisfy (see ``challenge_for_decision``).
    """

    def __init__(
        self,
        authenticator: OidcAuthenticator,
        *,
        listen: str,
        scheme: str = "http",
        mcp_paths: Sequence[str] = ("/mcp",),
        binder: SessionBinder | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.scheme = scheme
        self.fallback_host = listen
        self.mcp_paths = tuple(mcp_paths)
        self.binder = binder if binder is not None else SessionBinder()
        self.audit = audit
        self.refusals = 0

    # -- URLs --------------------------------------------------------------

    def resource(self, host: str | bytes | None, path: str = "/") -> str:
        return resource_url(
            self.authenticator.config,
            scheme=self.scheme,
            host=host,
            path=path,
            fallback_host=self.fallback_host,
        )

    def metadata_url(self, host: str | bytes | None) -> str:
        return metadata_url(self.resource(host))

    # -- the hook ------------------------------------------------------------

    async def authenticate(self, meta: RequestMeta, peer: str) -> Identity | HttpReply:
        identity: Identity | None = None
        # judge() runs in this same task for this request: it reads the URL to
        # put in a 403 insufficient_scope challenge (step_up) from here.
        _REQUEST_METADATA_URL.set(self.metadata_url(meta.host))
        try:
            identity = await self.authenticator.verify(bearer_token(meta.authorization))
            if meta.session_id:
                self.binder.check(meta.session_id, identity, self.authenticator.clock())
        except IdentityError as error:
            challenge = challenge_for(error, self.metadata_url(meta.host))
            await self._audit_refusal(meta, peer, challenge, identity)
            return reply_for(challenge)
        return identity

    def serve(
        self, method: bytes, path: bytes, host: bytes | str | None = None
    ) -> HttpReply | None:
        text = path.decode("latin-1")
        endpoint = metadata_path_resource(text, self.mcp_paths)
        if endpoint is None:
            return None
        if method not in (b"GET", b"HEAD"):
            return HttpReply(status=405, body=b"", headers=((b"allow", b"GET, HEAD"),))
        document = protected_resource_metadata(
            self.authenticator.config, self.resource(host, endpoint)
        )
        return HttpReply(
            status=200,
            body=json.dumps(document, separators=(",", ":")).encode(),
            headers=((b"cache-control", b"max-age=300"),),
        )

    def bind_session(self, session_id: str, identity: Identity) -> None:
        """The upstream assigned ``session_id`` in answer to ``identity``'s
        initialize: bind it now, before anyone else can present it."""
        self.binder.bind(session_id, identity, self.authenticator.clock())

    def end_session(self, session_id: str) -> None:
        self.binder.forget(session_id)

    # -- the rest of the front-end's Authenticator protocol ------------------

    def session_assigned(self, session_id: str, identity: Identity) -> None:
        try:
            self.bind_session(session_id, identity)
        except IdentityError:
            # An upstream re-issuing a live id: its owner keeps it; the new
            # caller will be refused when presenting it.
            log.error("identity: upstream assigned session id already bound to another subject")

    def session_ended(self, session_id: str) -> None:
        self.end_session(session_id)

    def step_up(self, decision: Decision) -> tuple[tuple[bytes, bytes], ...] | None:
        """The headers of a 403 insufficient_scope answer for ``decision``, or
        None when it is not an identity denial a better token could fix."""
        prm = _REQUEST_METADATA_URL.get() or self.metadata_url(None)
        challenge = challenge_for_decision(decision, prm)
        if challenge is None or challenge.www_authenticate is None:
            return None
        return ((b"www-authenticate", challenge.www_authenticate.encode("ascii", "replace")),)

    def challenge_for(self, decision: Decision, host: str | bytes | None) -> HttpReply | None:
        challenge = challenge_for_decision(decision, self.metadata_url(host))
        return None if challenge is None else reply_for(challenge)

    async def _audit_refusal(
        self, meta: RequestMeta, peer: str, challenge: AuthChallenge, identity: Identity | None
    ) -> None:
        self.refusals += 1
        if self.audit is None:
            return
        event = AuditEvent(
            event="decision",
            session=meta.session_id,
            transport="http",
            subject=identity.subject if identity else None,
            issuer=identity.issuer if identity else None,
            method=meta.mcp_method,
            target=meta.mcp_name,
            decision="deny",
            rule_id="identity.authentication",
            reason=f"{challenge.status} {challenge.reason}: {challenge.message}",
            detail={"peer": peer, "http_status": challenge.status},
        )
        try:
            await self.audit.record(event)
        except AuditError as exc:
            # The reply is a refusal either way; losing its record is logged.
            log.error("identity: could not audit an authentication refusal: %s", exc)


def reply_for(challenge: AuthChallenge) -> HttpReply:
    """An ``AuthChallenge`` as the front-end's reply: the status, the
    ``WWW-Authenticate`` header, and a JSON-RPC error body (id null: the body
    was not read)."""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if challenge.www_authenticate:
        headers = ((b"www-authenticate", challenge.www_authenticate.encode("ascii", "replace")),)
    if challenge.status == 503:
        headers += ((b"retry-after", b"5"),)
    return rpc_error_reply(
        challenge.status,
        challenge.rpc_code,
        challenge.message,
        data={"reason": challenge.reason},
        headers=headers,
    )


def identity_metrics(authenticator: OidcAuthenticator, gate: Any = None) -> str:
    """Prometheus text for ``/metrics``: verified-token cache, issuer fetches,
    refused authentications, key-set state."""
    verifier = authenticator.verifier
    refusals = gate.refusals if isinstance(gate, HttpIdentityGate) else 0
    rows = [
        ("agentwall_identity_token_cache_hits_total", "counter", verifier.hits),
        ("agentwall_identity_token_cache_misses_total", "counter", verifier.misses),
        ("agentwall_identity_jwks_fetches_total", "counter", authenticator.fetches),
        ("agentwall_identity_jwks_fetch_failures_total", "counter", authenticator.fetch_failures),
        (
            "agentwall_identity_unknown_kid_refreshes_total",
            "counter",
            authenticator.unknown_kid_refreshes,
        ),
        ("agentwall_identity_refusals_total", "counter", refusals),
        ("agentwall_identity_keys", "gauge", len(verifier.jwks.keys)),
        ("agentwall_identity_keys_usable", "gauge", int(authenticator.ready)),
    ]
    return "".join(f"# TYPE {name} {kind}\n{name} {value}\n" for name, kind, value in rows)


def describe_identity(authenticator: OidcAuthenticator) -> dict[str, Any]:
    """What the ``proxy_start`` audit entry records about identity."""
    config = authenticator.config
    return {
        "issuer": config.issuer,
        "audience": list(config.audience),
        "algorithms": list(config.algorithms),
        "keys": len(authenticator.verifier.jwks.keys),
    }


if TYPE_CHECKING:
    from agentwall.io.http_front import Authenticator

    def _gate_is_an_authenticator(gate: HttpIdentityGate) -> Authenticator:
        return gate  # mypy checks the front-end's hook protocol here
