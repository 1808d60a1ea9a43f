"""An OpenID Connect identity provider for the tests: a real HTTP server on 127.0.0.1 that serves
``/.well-known/openid-configuration`` and a JWKS of keys made here (RSA, EC P-256, Ed25519), and
signs tokens with them. It counts what it is asked, can go down (503s or a refused connection), and
can hold its answers until released (a slow provider)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

AUDIENCE = "graywave-app"
DISCOVERY = "/.well-known/openid-configuration"
JWKS = "/keys.json"


@dataclass(frozen=True)
class Key:
    kid: str
    algorithm: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(jwt.get_algorithm_by_name(self.algorithm).to_jwk(self.private.public_key()))
        return {**found, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def make_key(kid: str, algorithm: str) -> Key:
    if algorithm == "RS256":
        return Key(kid, algorithm, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    if algorithm == "ES256":
        return Key(kid, algorithm, ec.generate_private_key(ec.SECP256R1()))
    return Key(kid, algorithm, ed25519.Ed25519PrivateKey.generate())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    """A token put together by hand (``alg: none``, an HS256 signature with a public key as its
    secret): PyJWT refuses to make them."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{_b64(signature)}"


def hs256_with(secret: bytes) -> Any:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


class Provider:
    """The identity provider. ``keys``: what its JWKS serves now (change it to rotate)."""

    def __init__(self, keys: list[Key]):
        self.keys = list(keys)
        self.hits: Counter[str] = Counter()
        self.status = 200
        """What it answers: 200, or an error status (down)."""
        self.hold = threading.Event()
        self.hold.set()
        """Cleared: each answer waits until it is set again (a slow provider)."""
        self.holding = threading.Event()
        """Set while an answer waits for ``hold``."""
        self.issuer_in_document: str | None = None
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.hits[self.path] += 1
                if not provider.hold.is_set():
                    provider.holding.set()
                    provider.hold.wait(60)
                if provider.status != 200:
                    self.send_error(provider.status)
                    return
                if self.path == DISCOVERY:
                    body = {"issuer": provider.issuer_in_document or provider.issuer, "jwks_uri": provider.url + JWKS}
                elif self.path == JWKS:
                    body = {"keys": [key.jwk() for key in provider.keys]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.issuer = self.url
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Down for good: the port refuses connections."""
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()

    @property
    def jwks_fetches(self) -> int:
        return self.hits[JWKS]

    def token(self, key: Key, *, header: dict[str, Any] | None = None, **claims: Any) -> str:
        """A token signed by ``key``, valid for 10 minutes from now, for user ``alice`` of this issuer
        and audience unless ``claims`` say otherwise (a claim or ``header`` entry set to None is left out)."""
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 600, **claims}
        payload = {name: value for name, value in payload.items() if value is not None}
        headers = {name: value for name, value in {"kid": key.kid, **(header or {})}.items() if value is not None}
        return jwt.encode(payload, key.private, algorithm=key.algorithm, headers=headers)
