"""Tokens of the app's identity provider (OIDC) through a real API server, beside graywave's own
tokens; the provider is a real JWKS server on 127.0.0.1 (``tests.identity_provider``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

from graywave.api.app import create_app
from graywave.service.identity import REFRESH_INTERVAL_S, OidcVerifier
from graywave.service.samples import encode, synthetic_photo
from tests.helpers import Api, Clock, serving
from tests.identity_provider import AUDIENCE, Provider, hs256_with, make_key, unsigned

pytestmark = pytest.mark.parametrize("api", ["embedded"], indirect=True)  # authentication touches no storage

RSA, EC, ED = make_key("rsa-1", "RS256"), make_key("ec-1", "ES256"), make_key("ed-1", "EdDSA")
ROTATED = make_key("rsa-2", "RS256")
PHOTO = encode(synthetic_photo(64, 48, seed=1), "JPEG", quality=90)


@pytest.fixture
def provider(monkeypatch) -> Iterator[Provider]:
    """The identity provider, and the API configured for it (name it before ``api``)."""
    found = Provider([RSA, EC, ED])
    monkeypatch.setenv("GRAYWAVE_OIDC_ISSUER", found.issuer)
    monkeypatch.setenv("GRAYWAVE_OIDC_AUDIENCE", AUDIENCE)
    yield found
    found.stop()


@dataclass
class Server:
    url: str
    app: FastAPI
    clock: Clock
    graywave_tokens: dict[str, str]

    @property
    def verifier(self) -> OidcVerifier:
        verifier = self.app.state.graywave.auth.oidc
        assert isinstance(verifier, OidcVerifier)
        return verifier

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture
def server(provider: Provider, api: Api) -> Iterator[Server]:
    """An API on the ``api`` fixture's settings (and its graywave tokens) whose verifier runs on the
    test's clock."""
    app = create_app(api.settings)
    clock = Clock()
    app.state.graywave.auth.oidc.keys.clock = clock
    with serving(app) as url:
        yield Server(url, app, clock, api.tokens)


def upload(client: httpx.Client, user: str) -> httpx.Response:
    return client.post(f"/images/{user}", files={"file": ("IMG_0001.jpg", PHOTO, "image/jpeg")})


def refusal(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["status"] == response.status_code and body["error"]["message"]
    return response.status_code, body["error"]["code"]


def test_identity_provider_tokens_and_graywave_tokens_side_by_side(provider, server):
    alice = server.client(provider.token(RSA, sub="alice"))
    assert upload(alice, "alice").status_code == 202
    assert alice.get("/images/alice").json()["total"] == 1
    assert refusal(alice.get("/images/bob")) == (403, "forbidden")
    assert refusal(alice.get("/images")) == (403, "forbidden")
    bob = server.client(provider.token(ED, sub="bob"))
    assert bob.get("/images/bob").json()["total"] == 0 and refusal(upload(bob, "alice")) == (403, "forbidden")
    admin = server.client(provider.token(EC, sub="ops", scope="openid graywave:admin"))
    assert admin.get("/images").json()["total"] == 1
    assert server.client(server.graywave_tokens["alice"]).get("/images/alice").json()["total"] == 1
    assert refusal(server.client("gw_not-a-token").get("/images/alice")) == (401, "unauthorized")


CLAIMS = {"sub": "alice", "aud": AUDIENCE}


def _forged(provider: Provider, alg: str, sign=None) -> str:
    claims = {"iss": provider.issuer, "exp": int(time.time()) + 600, **CLAIMS}
    return unsigned({"alg": alg, "kid": RSA.kid}, claims, sign)


REFUSED = {
    "expired": lambda p: p.token(RSA, exp=int(time.time()) - 120),
    "not valid yet": lambda p: p.token(RSA, nbf=int(time.time()) + 300),
    "another audience": lambda p: p.token(RSA, aud="another-app"),
    "another issuer": lambda p: p.token(EC, iss="https://evil.example"),
    "alg none": lambda p: _forged(p, "none"),
    "HS256 signed with the public key": lambda p: _forged(p, "HS256", hs256_with(RSA.public_pem())),
    "an unknown kid after the refresh": lambda p: p.token(make_key("unknown", "ES256")),
    "a user id of another shape": lambda p: p.token(ED, sub="auth0|5f7c1e"),
    "a reserved user id": lambda p: p.token(ED, sub="weekly"),
}


@pytest.mark.parametrize("make", REFUSED.values(), ids=REFUSED.keys())
def test_refused_tokens_are_a_json_401_before_any_body_is_read(provider, server, make):
    client = server.client(make(provider))
    for response in (client.get("/images/alice"), upload(client, "alice"), client.get("/users/alice/weekly")):
        assert refusal(response) == (401, "invalid_token"), response.text
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert server.client(server.graywave_tokens["alice"]).get("/images/alice").json()["total"] == 0  # nothing stored


def test_a_provider_that_is_down_keeps_known_keys_and_answers_503_for_a_new_kid(provider, server):
    alice = server.client(provider.token(RSA, sub="alice"))
    assert alice.get("/images/alice").status_code == 200  # its key is fetched and kept
    provider.status = 503
    server.clock.now += REFRESH_INTERVAL_S
    rotated = server.client(provider.token(ROTATED, sub="alice"))
    for response in (rotated.get("/images/alice"), upload(rotated, "alice")):
        assert refusal(response) == (503, "identity_provider_unavailable"), response.text
        assert 1 <= int(response.headers["retry-after"]) <= REFRESH_INTERVAL_S
    assert alice.get("/images/alice").status_code == 200 and upload(alice, "alice").status_code == 202
    provider.stop()  # down for good: the port refuses connections
    server.clock.now += REFRESH_INTERVAL_S
    assert refusal(rotated.get("/images/alice")) == (503, "identity_provider_unavailable")
    assert alice.get("/images/alice").json()["total"] == 1


def test_a_rotated_key_is_accepted_after_the_refresh(provider, server):
    assert server.client(provider.token(RSA)).get("/images/alice").status_code == 200
    provider.keys = [ROTATED, RSA]
    server.clock.now += REFRESH_INTERVAL_S
    assert server.client(provider.token(ROTATED)).get("/images/alice").status_code == 200
    assert provider.jwks_fetches == 2


def test_the_event_loop_serves_others_while_the_provider_is_slow(provider, server):
    """The keys are fetched off the event loop: while a request waits for them, others are served."""
    server.verifier.keys.timeout_s = 120  # the held request waits for the provider however slow this machine is
    provider.hold.clear()
    answer: list[httpx.Response] = []
    waiting = threading.Thread(target=lambda: answer.append(server.client(provider.token(RSA)).get("/images/alice")))
    waiting.start()
    try:
        assert provider.holding.wait(60)
        assert server.client().get("/healthz").status_code == 200
        assert server.client(server.graywave_tokens["alice"]).get("/images/alice").status_code == 200
        assert waiting.is_alive() and not answer  # still waiting for the provider
    finally:
        provider.hold.set()
        waiting.join(60)
    assert answer[0].status_code == 200


def test_a_request_is_authenticated_once(server, monkeypatch):
    """The token was checked twice for a request with a body (the middleware, then the route), once
    on the event loop; the routes that need none (the probes) check none."""
    store = server.app.state.graywave.tokens
    asked: list[str] = []
    authenticate = store.authenticate
    monkeypatch.setattr(store, "authenticate", lambda token: asked.append(token) or authenticate(token))
    alice = server.client(server.graywave_tokens["alice"])
    assert upload(alice, "alice").status_code == 202
    assert len(asked) == 1
    assert alice.get("/images/alice").status_code == 200
    assert len(asked) == 2
    assert alice.get("/healthz").status_code == 200
    assert len(asked) == 2
