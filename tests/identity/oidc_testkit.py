"""A real OIDC issuer for tests: keys from ``cryptography``, tokens signed with
PyJWT, and discovery + JWKS served over real HTTP on 127.0.0.1.

The server runs in a thread of the test process so tests can rotate keys,
take it down (socket closed: connection refused), make it answer 503, and
count every request it received.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

AUDIENCE = "agentwall-proxy"


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any
    public_jwk: dict[str, Any]

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def rsa_key(kid: str = "rsa-1", alg: str = "RS256", *, declare_alg: bool = True) -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return _finish(SigningKey(kid, alg, private, jwk), declare_alg)


def ec_key(kid: str = "ec-1", *, declare_alg: bool = True) -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return _finish(SigningKey(kid, "ES256", private, jwk), declare_alg)


def ed25519_key(kid: str = "ed-1", *, declare_alg: bool = True) -> SigningKey:
    private = ed25519.Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return _finish(SigningKey(kid, "EdDSA", private, jwk), declare_alg)


def _finish(key: SigningKey, declare_alg: bool) -> SigningKey:
    key.public_jwk = {**key.public_jwk, "kid": key.kid, "use": "sig"}
    if declare_alg:
        key.public_jwk["alg"] = key.alg
    return key


def claims(issuer: str, now: float | None = None, **overrides: Any) -> dict[str, Any]:
    now = time.time() if now is None else now
    base: dict[str, Any] = {
        "iss": issuer,
        "sub": "alice",
        "aud": AUDIENCE,
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + 600,
        "scope": "tools:read deploy:write",
        "groups": ["release", "dev"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: SigningKey, payload: dict[str, Any], **header: Any) -> str:
    headers = {"kid": key.kid, **header}
    return jwt.encode(payload, key.private, algorithm=key.alg, headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A token with exactly this header and payload and whatever signature."""
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
    return signing_input + "." + _b64(signature)


def forge_hs256_with_public_key(key: SigningKey, payload: dict[str, Any]) -> str:
    """The classic key-confusion attack: HMAC-SHA256 keyed with the issuer's
    *public* key (which anyone can download), with the RSA key's kid."""
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
    mac = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(mac)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        issuer = self.server.owner
        with issuer.lock:
            issuer.hits[self.path] += 1
            mode = issuer.mode
            jwks = {"keys": [dict(k.public_jwk) for k in issuer.keys]}
        if mode == "error":
            self._send(503, b'{"error":"temporarily_unavailable"}')
            return
        if mode == "slow":
            time.sleep(1.0)
        if self.path == issuer.discovery_path:
            document = {
                "issuer": issuer.advertised_issuer or issuer.url,
                "jwks_uri": issuer.url + "/jwks",
                "authorization_endpoint": issuer.url + "/authorize",
                "token_endpoint": issuer.url + "/token",
                "code_challenge_methods_supported": ["S256"],
            }
            self._send(200, json.dumps(document).encode())
        elif self.path == "/jwks":
            self._send(200, json.dumps(jwks).encode())
        else:
            self._send(404, b"{}")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: TestIssuer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a test cancelling a slow fetch) is expected.
        pass


class TestIssuer:
    """Discovery at ``/.well-known/openid-configuration``, keys at ``/jwks``."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, keys: list[SigningKey] | None = None) -> None:
        self.keys: list[SigningKey] = list(keys or [])
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.mode = "ok"
        self.discovery_path = "/.well-known/openid-configuration"
        self.advertised_issuer: str | None = None
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TestIssuer:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.owner = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Down: the listening socket is closed, so fetches get refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def set_keys(self, keys: list[SigningKey]) -> None:
        with self.lock:
            self.keys = list(keys)

    def jwks_hits(self) -> int:
        with self.lock:
            return self.hits["/jwks"]

    def token(self, key: SigningKey | None = None, **overrides: Any) -> str:
        return sign(key or self.keys[0], claims(self.url, **overrides))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, limit: float = 60.0) -> None:
    """Poll (bounded) until ``url`` answers with any status, or ``proc`` dies."""
    deadline = time.monotonic() + limit
    while True:
        assert proc.poll() is None, log.read_text(errors="replace")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (loopback URL we built)
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not answer: {log.read_text()}"
            time.sleep(0.1)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def recording_upstream(tmp: Path) -> Iterator[tuple[str, Path]]:
    """A real SDK MCP server subprocess that records every request's headers;
    yields (its /mcp URL, the JSONL file of recorded requests)."""
    port = free_port()
    record = tmp / f"upstream-{port}-headers.jsonl"
    log = tmp / f"upstream-{port}.out"
    script = Path(__file__).with_name("identity_upstream.py")
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(port), str(record)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, log)
        yield f"http://127.0.0.1:{port}/mcp", record
    finally:
        stop_process(proc)
