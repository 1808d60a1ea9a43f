"""Tokens of the app's identity provider (OIDC) through the API, beside graywave's own tokens; the
provider is a real JWKS server on 127.0.0.1 (``tests.identity_provider``). The app is reached in this
process (``server``: ``httpx.ASGITransport``), but for a request held while the provider is slow, which
others pass on a real uvicorn (``live_server``)."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from graywave.api.app import create_app
from graywave.service.identity import REFRESH_INTERVAL_S, OidcVerifier
from graywave.service.samples import encode, synthetic_photo
from tests.helpers import Api, Clock, InProcessApi, in_process, in_process_client, serving
from tests.identity_provider import AUDIENCE, Provider, hs256_with, make_key, unsigned

EMBEDDED = pytest.mark.parametrize("api", ["embedded"], indirect=True)  # authentication touches no storage
LIVE_EMBEDDED = pytest.mark.parametrize("live_api", ["embedded"], indirect=True)

RSA, EC, ED = make_key("rsa-1", "RS256"), make_key("ec-1", "ES256"), make_key("ed-1", "EdDSA")
ROTATED = make_key("rsa-2", "RS256")
PHOTO = encode(synthetic_photo(64, 48, seed=1), "JPEG", quality=90)


@pytest.fixture
def provider(monkeypatch) -> Iterator[Provider]:
    """The identity provider, and the API configured for it (name it before ``api`` or ``live_api``)."""
    found = Provider([RSA, EC, ED])
    monkeypatch.setenv("GRAYWAVE_OIDC_ISSUER", found.issuer)
    monkeypatch.setenv("GRAYWAVE_OIDC_AUDIENCE", AUDIENCE)
    yield found
    found.stop()


@dataclass
class Server:
    """An API whose verifier runs on the test's clock: in this process, or under uvicorn at ``url``."""

    app: FastAPI
    clock: Clock
    graywave_tokens: dict[str, str]
    url: str = ""

    @property
    def verifier(self) -> OidcVerifier:
        verifier = self.app.state.graywave.auth.oidc
        assert isinstance(verifier, OidcVerifier)
        return verifier

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        return in_process_client(self.app, token)

    def live_client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def on_a_clock(api: Api | InProcessApi) -> Server:
    """An API on the ``api`` fixture's settings (and its graywave tokens) whose verifier runs on the
    test's clock."""
    app, clock = create_app(api.settings), Clock()
    app.state.graywave.auth.oidc.keys.clock = clock
    return Server(app, clock, api.tokens)


@pytest.fixture
async def server(provider: Provider, api: InProcessApi) -> AsyncIterator[Server]:
    found = on_a_clock(api)
    async with in_process(found.app):
        yield found


@pytest.fixture
def live_server(provider: Provider, live_api: Api) -> Iterator[Server]:
    found = on_a_clock(live_api)
    with serving(found.app) as found.url:
        yield found


def upload(client: httpx.AsyncClient, user: str) -> Coroutine[Any, Any, httpx.Response]:
    return client.post(f"/images/{user}", files={"file": ("IMG_0001.jpg", PHOTO, "image/jpeg")})


def refusal(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["status"] == response.status_code and body["error"]["message"]
    return response.status_code, body["error"]["code"]


@EMBEDDED
@pytest.mark.anyio
async def test_identity_provider_tokens_and_graywave_tokens_side_by_side(provider, server):
    alice = server.client(provider.token(RSA, sub="alice"))
    assert (await upload(alice, "alice")).status_code == 202
    assert (await alice.get("/images/alice")).json()["total"] == 1
    assert refusal(await alice.get("/images/bob")) == (403, "forbidden")
    assert refusal(await alice.get("/images")) == (403, "forbidden")
    bob = server.client(provider.token(ED, sub="bob"))
    assert (await bob.get("/images/bob")).json()["total"] == 0
    assert refusal(await upload(bob, "alice")) == (403, "forbidden")
    admin = server.client(provider.token(EC, sub="ops", scope="openid graywave:admin"))
    assert (await admin.get("/images")).json()["total"] == 1
    assert (await server.client(server.graywave_tokens["alice"]).get("/images/alice")).json()["total"] == 1
    assert refusal(await server.client("gw_not-a-token").get("/images/alice")) == (401, "unauthorized")


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


@EMBEDDED
@pytest.mark.anyio
@pytest.mark.parametrize("make", REFUSED.values(), ids=REFUSED.keys())
async def test_refused_tokens_are_a_json_401_before_any_body_is_read(provider, server, make):
    client = server.client(make(provider))
    for response in (
        await client.get("/images/alice"),
        await upload(client, "alice"),
        await client.get("/users/alice/weekly"),
    ):
        assert refusal(response) == (401, "invalid_token"), response.text
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    stored = (await server.client(server.graywave_tokens["alice"]).get("/images/alice")).json()["total"]
    assert stored == 0  # nothing stored


@EMBEDDED
@pytest.mark.anyio
async def test_a_provider_that_is_down_keeps_known_keys_and_answers_503_for_a_new_kid(provider, server):
    alice = server.client(provider.token(RSA, sub="alice"))
    assert (await alice.get("/images/alice")).status_code == 200  # its key is fetched and kept
    provider.status = 503
    server.clock.now += REFRESH_INTERVAL_S
    rotated = server.client(provider.token(ROTATED, sub="alice"))
    for response in (await rotated.get("/images/alice"), await upload(rotated, "alice")):
        assert refusal(response) == (503, "identity_provider_unavailable"), response.text
        assert 1 <= int(response.headers["retry-after"]) <= REFRESH_INTERVAL_S
    assert (await alice.get("/images/alice")).status_code == 200 and (await upload(alice, "alice")).status_code == 202
    provider.stop()  # down for good: the port refuses connections
    server.clock.now += REFRESH_INTERVAL_S
    assert refusal(await rotated.get("/images/alice")) == (503, "identity_provider_unavailable")
    assert (await alice.get("/images/alice")).json()["total"] == 1


@EMBEDDED
@pytest.mark.anyio
async def test_a_rotated_key_is_accepted_after_the_refresh(provider, server):
    assert (await server.client(provider.token(RSA)).get("/images/alice")).status_code == 200
    provider.keys = [ROTATED, RSA]
    server.clock.now += REFRESH_INTERVAL_S
    assert (await server.client(provider.token(ROTATED)).get("/images/alice")).status_code == 200
    assert provider.jwks_fetches == 2


@LIVE_EMBEDDED
def test_the_event_loop_serves_others_while_the_provider_is_slow(provider, live_server):
    """The keys are fetched off the event loop: while a request waits for them, others are served."""
    server = live_server
    server.verifier.keys.timeout_s = 120  # the held request waits for the provider however slow this machine is
    provider.hold.clear()
    answer: list[httpx.Response] = []
    held = server.live_client(provider.token(RSA))
    waiting = threading.Thread(target=lambda: answer.append(held.get("/images/alice")))
    waiting.start()
    try:
        assert provider.holding.wait(60)
        assert server.live_client().get("/healthz").status_code == 200
        assert server.live_client(server.graywave_tokens["alice"]).get("/images/alice").status_code == 200
        assert waiting.is_alive() and not answer  # still waiting for the provider
    finally:
        provider.hold.set()
        waiting.join(60)
    assert answer[0].status_code == 200


@EMBEDDED
@pytest.mark.anyio
async def test_a_request_is_authenticated_once(server, monkeypatch):
    """The token was checked twice for a request with a body (the middleware, then the route), once
    on the event loop; the routes that need none (the probes) check none. The process's memory of the
    tokens it accepted (``service.identity.RECENT_S``, test_identity's) is off here: each request is
    counted, however quickly it follows the last (it passed on a real server only when the first
    request took longer than that memory lasts)."""
    monkeypatch.setattr(server.app.state.graywave.auth, "recent", lambda token: None)
    store = server.app.state.graywave.tokens
    asked: list[str] = []
    authenticate = store.authenticate
    monkeypatch.setattr(store, "authenticate", lambda token: asked.append(token) or authenticate(token))
    alice = server.client(server.graywave_tokens["alice"])
    assert (await upload(alice, "alice")).status_code == 202
    assert len(asked) == 1
    assert (await alice.get("/images/alice")).status_code == 200
    assert len(asked) == 2
    assert (await alice.get("/healthz")).status_code == 200
    assert len(asked) == 2
