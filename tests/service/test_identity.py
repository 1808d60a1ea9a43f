"""Tokens of an identity provider (OIDC): verified by PyJWT against the keys of a real JWKS server on
127.0.0.1 (``tests.identity_provider``), with a clock of the test's own for the 30 s fetch rule."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydantic import ValidationError

from graywave.config import Settings
from graywave.errors import BackendUnavailable, GraywaveError
from graywave.service.identity import (
    KEYS_MAX_AGE_S,
    RECENT_S,
    REFRESH_INTERVAL_S,
    Authenticator,
    IdentityProviderUnavailable,
    InvalidToken,
    OidcVerifier,
)
from graywave.service.tokens import Principal
from tests.helpers import Clock
from tests.identity_provider import AUDIENCE, DISCOVERY, Provider, hs256_with, make_key, unsigned

RSA, EC, ED = make_key("rsa-1", "RS256"), make_key("ec-1", "ES256"), make_key("ed-1", "EdDSA")
ROTATED = make_key("rsa-2", "RS256")


@pytest.fixture
def provider() -> Iterator[Provider]:
    found = Provider([RSA, EC, ED])
    yield found
    found.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(provider: Provider, clock: Clock) -> OidcVerifier:
    return OidcVerifier(provider.issuer, AUDIENCE, clock=clock, timeout_s=5)


def until(condition, what: str) -> None:
    """Wait for a background fetch's outcome (a deadline against a hang, not a speed check)."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.mark.parametrize("key", [RSA, EC, ED], ids=["RS256", "ES256", "EdDSA"])
def test_each_accepted_algorithm_names_its_user(provider, verifier, key):
    assert verifier.verify(provider.token(key, sub="alice")) == Principal(label="alice", user_id="alice", admin=False)


def test_the_admin_scope_makes_an_admin_token(provider, verifier):
    admin = verifier.verify(provider.token(RSA, sub="ops", scope="openid graywave:admin profile"))
    assert admin.admin and admin.user_id is None and admin.may_access("bob")
    for scope in ("openid profile", "graywave:administrator", "graywave:admin2 admin"):
        user = verifier.verify(provider.token(RSA, sub="ops", scope=scope))
        assert not user.admin and user.may_access("ops") and not user.may_access("bob")
    with pytest.raises(InvalidToken, match="scope"):
        verifier.verify(provider.token(RSA, scope=["graywave:admin"]))


def test_the_user_claim_is_configurable(provider, clock):
    verifier = OidcVerifier(provider.issuer, AUDIENCE, user_claim="graywave_user", clock=clock)
    assert verifier.verify(provider.token(RSA, sub="auth0|5f7c", graywave_user="alice")).user_id == "alice"
    with pytest.raises(InvalidToken, match="graywave_user claim is missing"):
        verifier.verify(provider.token(RSA, sub="alice"))


REFUSED = {  # times are seconds from now, made into claims when the test runs (not at collection)
    "expired": ({"exp": -120}, "expired"),
    "not valid yet (nbf)": ({"nbf": 300}, "not valid yet"),
    "issued in the future (iat)": ({"iat": 300}, "not valid yet"),
    "another audience": ({"aud": "another-app"}, r"not meant for this API \(aud\)"),
    "no audience": ({"aud": None}, "no aud claim"),
    "another issuer": ({"iss": "https://evil.example"}, r"\(iss\)"),
    "no expiry": ({"exp": None}, "no exp claim"),
    "a user id of another shape": ({"sub": "auth0|5f7c1e"}, "not a graywave user id"),
    "a reserved user id": ({"sub": "weekly"}, "reserved name"),
    "a user id with a newline": ({"sub": "alice\n"}, "not a graywave user id"),
    "a user id too long": ({"sub": "a" * 65}, "longer than 64"),
    "a user id that is no string": ({"sub": None, "uid": 5}, "sub claim is missing"),
}


@pytest.mark.parametrize("claims, reason", REFUSED.values(), ids=REFUSED.keys())
def test_refused_claims(provider, verifier, claims, reason):
    now = int(time.time())
    claims = {
        name: now + value if name in ("exp", "nbf", "iat") and value is not None else value
        for name, value in claims.items()
    }
    with pytest.raises(InvalidToken, match=reason):
        verifier.verify(provider.token(RSA, **claims))


def test_the_leeway_is_small(provider, verifier):
    """30 s of clock skew either way, no more."""
    assert verifier.verify(provider.token(RSA, exp=int(time.time()) - 10))
    assert verifier.verify(provider.token(RSA, nbf=int(time.time()) + 10))
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(provider.token(RSA, exp=int(time.time()) - 60))


def test_forged_tokens_are_refused_without_asking_the_provider(provider, verifier):
    claims = {"iss": provider.issuer, "aud": AUDIENCE, "sub": "alice", "exp": int(time.time()) + 600}
    forged = {
        "alg none": unsigned({"alg": "none", "kid": RSA.kid}, claims),
        "alg None": unsigned({"alg": "None", "kid": RSA.kid}, claims),
        "HS256 with the public key": unsigned({"alg": "HS256", "kid": RSA.kid}, claims, hs256_with(RSA.public_pem())),
        "HS256 with the JWK": unsigned({"alg": "HS256", "kid": RSA.kid}, claims, hs256_with(RSA.jwk()["n"].encode())),
        "RS512": unsigned({"alg": "RS512", "kid": RSA.kid}, claims, lambda data: b"x" * 256),
    }
    for name, token in forged.items():
        with pytest.raises(InvalidToken, match=r"algorithm .* is not accepted"):
            verifier.verify(token)
        assert provider.jwks_fetches == 0, name
    with pytest.raises(InvalidToken, match="well-formed"):
        verifier.verify("a.b.c")
    with pytest.raises(InvalidToken, match="no signing key"):
        verifier.verify(provider.token(RSA, header={"kid": None}))


def test_a_signature_must_be_the_named_keys(provider, verifier):
    genuine = provider.token(RSA)
    head, _, signature = genuine.split(".")
    tampered_body = provider.token(RSA, sub="bob").split(".")[1]
    with pytest.raises(InvalidToken, match="Signature verification failed"):
        verifier.verify(f"{head}.{tampered_body}.{signature}")
    # A token of the EC key that claims to be signed by the RSA key's kid, and one of another key.
    with pytest.raises(InvalidToken):
        verifier.verify(provider.token(EC, header={"kid": RSA.kid}))
    stranger = make_key(RSA.kid, "RS256")
    with pytest.raises(InvalidToken, match="Signature verification failed"):
        verifier.verify(provider.token(stranger))


def test_keys_are_cached_and_an_unknown_kid_is_fetched_at_most_once_per_30_s(provider, verifier, clock):
    for key in (RSA, EC, ED, RSA):
        verifier.verify(provider.token(key))
    assert provider.jwks_fetches == 1 and provider.hits[DISCOVERY] == 1
    for attempt in range(20):  # random kids cannot make the API hammer the provider
        with pytest.raises(InvalidToken, match="not one of the identity provider's keys"):
            verifier.verify(provider.token(make_key(f"guess-{attempt}", "ES256")))
        clock.now += 1
    assert provider.jwks_fetches == 1
    clock.now += REFRESH_INTERVAL_S
    with pytest.raises(InvalidToken, match="not one of the identity provider's keys"):  # after the refresh too
        verifier.verify(provider.token(make_key("guess-late", "ES256")))
    assert provider.jwks_fetches == 2 and provider.hits[DISCOVERY] == 1  # the jwks_uri is kept


def test_a_rotated_key_is_accepted_after_a_refresh(provider, verifier, clock):
    verifier.verify(provider.token(RSA))
    provider.keys = [ROTATED, RSA]  # the provider publishes its next key
    clock.now += REFRESH_INTERVAL_S
    assert verifier.verify(provider.token(ROTATED)).user_id == "alice"
    assert verifier.verify(provider.token(RSA)).user_id == "alice"
    assert provider.jwks_fetches == 2


def test_a_rotated_key_within_30_s_of_the_last_fetch_waits_for_the_next_one(provider, verifier, clock):
    verifier.verify(provider.token(RSA))
    provider.keys = [ROTATED, RSA]
    clock.now += 10
    with pytest.raises(InvalidToken, match="not one of"):
        verifier.verify(provider.token(ROTATED))
    clock.now += REFRESH_INTERVAL_S - 10
    assert verifier.verify(provider.token(ROTATED))
    assert provider.jwks_fetches == 2


def test_a_burst_of_a_new_kid_makes_one_fetch_and_every_token_passes(provider, verifier, clock):
    verifier.verify(provider.token(RSA))
    provider.keys = [ROTATED, RSA]
    clock.now += REFRESH_INTERVAL_S
    provider.hold.clear()  # the fetch waits until all the requests are in
    tokens = [provider.token(ROTATED, sub=f"user{n}") for n in range(16)]
    with ThreadPoolExecutor(16) as pool:
        results = [pool.submit(verifier.verify, token) for token in tokens]
        assert provider.holding.wait(30)
        provider.hold.set()
        assert [result.result().user_id for result in results] == [f"user{n}" for n in range(16)]
    assert provider.jwks_fetches == 2


def test_a_removed_key_stops_working_after_the_background_refresh(provider, verifier, clock):
    verifier.verify(provider.token(RSA))
    provider.keys = [EC]  # the RSA key is withdrawn (compromised)
    clock.now += KEYS_MAX_AGE_S
    assert verifier.verify(provider.token(RSA))  # still known: the refresh runs in the background
    until(lambda: provider.jwks_fetches == 2 and verifier.keys._running is None, "the background refresh")
    with pytest.raises(InvalidToken, match="not one of"):
        verifier.verify(provider.token(RSA))


def test_a_provider_that_is_down_keeps_the_known_keys_and_refuses_new_ones_with_503(provider, verifier, clock):
    verifier.verify(provider.token(RSA))
    provider.status = 503
    for step in (REFRESH_INTERVAL_S, KEYS_MAX_AGE_S):  # past the fetch interval and past the keys' age
        clock.now += step
        assert verifier.verify(provider.token(RSA)).user_id == "alice"
    until(lambda: provider.jwks_fetches == 2 and verifier.keys._running is None, "the background refresh")
    assert verifier.verify(provider.token(RSA)).user_id == "alice"  # a failed refresh drops no key
    with pytest.raises(IdentityProviderUnavailable) as refused:  # within 30 s of the failed fetch
        verifier.verify(provider.token(ROTATED))
    assert 1 <= refused.value.retry_after_s <= REFRESH_INTERVAL_S
    assert provider.jwks_fetches == 2
    clock.now += REFRESH_INTERVAL_S
    with pytest.raises(IdentityProviderUnavailable, match="503"):  # its own fetch, which fails
        verifier.verify(provider.token(ROTATED))
    assert provider.jwks_fetches == 3
    provider.status, provider.keys = 200, [ROTATED, RSA]  # back
    clock.now += REFRESH_INTERVAL_S
    assert verifier.verify(provider.token(ROTATED)).user_id == "alice"


def test_a_provider_that_refuses_connections(provider, verifier, clock):
    provider.stop()
    with pytest.raises(IdentityProviderUnavailable, match="cannot be fetched"):
        verifier.verify(provider.token(RSA))
    assert issubclass(IdentityProviderUnavailable, BackendUnavailable)


def test_a_provider_that_does_not_answer_is_given_up_on(provider, clock):
    """A request waits at most the verifier's timeout for the keys (the fetch is bounded too)."""
    verifier = OidcVerifier(provider.issuer, AUDIENCE, clock=clock, timeout_s=0.5)
    provider.hold.clear()
    with pytest.raises(IdentityProviderUnavailable, match=r"did not come within 0\.5 s"):
        verifier.verify(provider.token(RSA))
    provider.hold.set()  # the provider answers late: the keys are kept for the next request
    until(lambda: verifier.keys._running is None, "the late fetch")
    assert verifier.verify(provider.token(RSA)).user_id == "alice"
    assert provider.jwks_fetches == 1


def test_the_discovery_document_must_name_the_issuer(provider, clock):
    provider.issuer_in_document = "https://someone-else.example"
    with pytest.raises(IdentityProviderUnavailable, match="does not name the issuer"):
        OidcVerifier(provider.issuer, AUDIENCE, clock=clock).verify(provider.token(RSA))


def test_an_explicit_jwks_url_skips_discovery(provider, clock):
    verifier = OidcVerifier(provider.issuer, AUDIENCE, jwks_url=f"{provider.url}/keys.json", clock=clock)
    assert verifier.verify(provider.token(ED)).user_id == "alice"
    assert provider.hits[DISCOVERY] == 0 and provider.jwks_fetches == 1


class Store:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def authenticate(self, token: str) -> Principal | None:
        self.asked.append(token)
        return Principal(label="ops", user_id=None, admin=True) if token == "gw_ops" else None


def test_both_kinds_of_token_side_by_side(provider, verifier):
    store = Store()
    both = Authenticator(store, verifier)
    assert both.authenticate("gw_ops") == Principal(label="ops", user_id=None, admin=True)
    assert both.authenticate("gw_other") is None
    assert both.authenticate(provider.token(EC, sub="bob")) == Principal(label="bob", user_id="bob", admin=False)
    with pytest.raises(InvalidToken):
        both.authenticate(provider.token(EC, aud="another-app"))
    assert store.asked == ["gw_ops", "gw_other"]  # a JWT never reaches the token store
    alone = Authenticator(store)  # no identity provider configured: a JWT is just an unknown token
    assert alone.authenticate(provider.token(EC)) is None


def test_the_settings(monkeypatch, provider):
    assert OidcVerifier.from_settings(Settings()) is None
    monkeypatch.setenv("GRAYWAVE_OIDC_ISSUER", provider.issuer)
    with pytest.raises(ValidationError, match="GRAYWAVE_OIDC_AUDIENCE is required"):
        Settings()
    monkeypatch.setenv("GRAYWAVE_OIDC_AUDIENCE", AUDIENCE)
    monkeypatch.setenv("GRAYWAVE_OIDC_USER_CLAIM", "email_user")
    verifier = OidcVerifier.from_settings(Settings())
    assert verifier is not None and (verifier.issuer, verifier.audience, verifier.user_claim) == (
        provider.issuer,
        AUDIENCE,
        "email_user",
    )
    for name, value in (("GRAYWAVE_OIDC_ISSUER", "file:///etc/passwd"), ("GRAYWAVE_OIDC_JWKS_URL", "keys.json")):
        with monkeypatch.context() as patch:
            patch.setenv(name, value)
            with pytest.raises(ValidationError, match=f"{name} must be an http"):
                Settings()
    monkeypatch.delenv("GRAYWAVE_OIDC_ISSUER")
    with pytest.raises(ValidationError, match="need GRAYWAVE_OIDC_ISSUER"):
        Settings()


def test_errors_are_graywaves():
    assert issubclass(InvalidToken, GraywaveError) and issubclass(IdentityProviderUnavailable, GraywaveError)


def test_verification_is_thread_safe(provider, verifier):
    tokens = [provider.token(key, sub=f"user{n}") for n in range(30) for key in (RSA, EC, ED)]
    threads_before = threading.active_count()
    with ThreadPoolExecutor(8) as pool:
        users = list(pool.map(lambda token: verifier.verify(token).user_id, tokens))
    assert users == [f"user{n}" for n in range(30) for _ in range(3)]
    assert provider.jwks_fetches == 1
    until(lambda: threading.active_count() <= threads_before, "no thread left behind")


def test_an_accepted_token_is_remembered_for_recent_s_and_a_refusal_is_not():
    """The API asks ``recent`` on the event loop before it reads the store: a phone's burst costs one
    read. A revoked token is refused once ``RECENT_S`` has passed (issue 22: within 1 s)."""
    store, now = Store(), [0.0]
    authenticator = Authenticator(store, clock=lambda: now[0])
    ops = Principal(label="ops", user_id=None, admin=True)
    assert authenticator.recent("gw_ops") is None  # never accepted yet
    assert authenticator.authenticate("gw_ops") == ops
    assert authenticator.authenticate("gw_other") is None
    now[0] = RECENT_S * 0.9
    assert authenticator.recent("gw_ops") == ops  # no store read
    assert authenticator.recent("gw_other") is None  # a refusal is asked again, every time
    now[0] = RECENT_S * 1.01
    assert authenticator.recent("gw_ops") is None  # forgotten: the next request reads the store
    assert store.asked == ["gw_ops", "gw_other"]
