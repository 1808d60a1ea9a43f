"""Who a bearer token is: one of graywave's own tokens, or a JWT of the app's identity provider (OIDC).

Both kinds work side by side; ``Authenticator`` makes the choice, in one place. A token shaped like
a JWT (three dot-separated parts) is verified as one when ``GRAYWAVE_OIDC_ISSUER`` is set; any other
token is looked up in graywave's token store (``service.tokens``), whose tokens have no dot.

An identity provider's token (Cognito, Auth0, Keycloak, any OpenID Connect issuer) is verified by
PyJWT, never by hand here:

- signed with RS256, ES256 or EdDSA by a key of the issuer's JWKS, named by the token's ``kid`` (an
  ``HS256`` token, one signed with a public key as its secret, and ``alg: none`` are refused before
  any key is looked up);
- ``iss`` exactly ``GRAYWAVE_OIDC_ISSUER``, ``aud`` holding ``GRAYWAVE_OIDC_AUDIENCE``, an ``exp``
  not passed and no ``nbf``/``iat`` in the future, with ``LEEWAY_S`` of clock skew either way;
- its ``GRAYWAVE_OIDC_USER_CLAIM`` (default ``sub``) is a graywave user id (the layout's rules,
  reserved ids included): it is the user whose data the token reaches;
- ``graywave:admin`` among the words of its ``scope`` claim makes it an admin token.

The keys (``OidcKeys``) are fetched with PyJWT's ``PyJWKClient`` and kept here: PyJWKClient's own
cache (PyJWT 2.15) drops the set when its lifespan ends and fetches it again on the request path,
so a provider that is down would stop the keys already known; its cool-down starts only after a
fetch that succeeded, so a provider that is down would be asked again on every unknown ``kid``.
Here the keys stay until a fetch replaces them; a fetch is made when a token names a ``kid`` that
is not known, or in the background when the set is older than ``KEYS_MAX_AGE_S`` (so a key removed
from the JWKS stops working), and never more than once per ``REFRESH_INTERVAL_S``, whether it
succeeded or not. One fetch at a time: the requests that need it wait for it, at most
``FETCH_TIMEOUT_S``. A provider that is down leaves the known keys working; a token of an unknown
``kid`` then gets ``IdentityProviderUnavailable`` (503), and once the provider answered, an
unknown ``kid`` is ``InvalidToken`` (401).

``Authenticator.authenticate`` may wait on the network (the JWKS, the token store): call it on a
worker thread, never on an event loop.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol

import cachetools
import jwt

from graywave.config import Settings
from graywave.errors import BackendUnavailable, GraywaveError
from graywave.service.tokens import Principal
from graywave.storage.layout import user_id_problem

logger = logging.getLogger("graywave.identity")

ALGORITHMS = ("RS256", "ES256", "EdDSA")
"""The signing algorithms accepted: asymmetric only."""
ADMIN_SCOPE = "graywave:admin"
"""A word of a token's ``scope`` claim that makes it an admin token."""
LEEWAY_S = 30
"""Clock skew allowed when checking ``exp``, ``nbf`` and ``iat``."""
REFRESH_INTERVAL_S = 30.0
"""The least time between two fetches of the identity provider's keys (one that failed counts)."""
KEYS_MAX_AGE_S = 300.0
"""Keys fetched longer ago than this are fetched again in the background (a removed key then stops working)."""
FETCH_TIMEOUT_S = 5.0
"""The longest a request waits for the identity provider (the discovery document and the JWKS)."""
LATE_ANSWER_S = 5.0
"""How much longer than a request waits the fetch itself goes on: a provider that answers late still
fills the cache for the next request."""
MAX_DISCOVERY_BYTES = 1024 * 1024
"""The most of a discovery document read."""
DISCOVERY_PATH = "/.well-known/openid-configuration"


class InvalidToken(GraywaveError, ValueError):
    """A JWT that is refused (expired, another audience or issuer, a bad signature, an unknown key,
    a user claim that is not a user id): the API answers 401 ``invalid_token``."""


class IdentityProviderUnavailable(BackendUnavailable):
    """The identity provider's keys cannot be fetched now, and the token's key is not known: the API
    answers 503 ``identity_provider_unavailable``, with ``Retry-After`` of ``retry_after_s``. The
    message names the URL, for the log only."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TokenLookup(Protocol):
    """graywave's own token store (``service.tokens``)."""

    def authenticate(self, token: str) -> Principal | None: ...


def looks_like_jwt(token: str) -> bool:
    """A JWS in compact form: three dot-separated parts (graywave's own tokens have no dot)."""
    return token.count(".") == 2


RECENT_S = 0.5
"""How long an ``Authenticator`` remembers a token it accepted: a revoked token (or an expired JWT)
is refused by every API process within this time. Meanwhile a phone's
burst of requests costs one token-store read, not one each."""
RECENT_TOKENS = 100_000
"""The most tokens an ``Authenticator`` remembers at once (the least recently used go first)."""


class Authenticator:
    """The one place that says who a bearer token is: a JWT of the identity provider when ``oidc`` is
    set and the token is shaped like one, else one of graywave's own tokens. A token it accepted is
    remembered for ``RECENT_S`` (``recent``); a refusal is not."""

    def __init__(
        self, tokens: TokenLookup, oidc: OidcVerifier | None = None, *, clock: Callable[[], float] = time.monotonic
    ):
        self.tokens = tokens
        self.oidc = oidc
        self._recent: cachetools.TTLCache[str, Principal] = cachetools.TTLCache(RECENT_TOKENS, RECENT_S, timer=clock)
        self._lock = threading.Lock()  # the cache is read on the event loop and filled on worker threads

    def recent(self, token: str) -> Principal | None:
        """The caller of ``token`` if it was accepted in the last ``RECENT_S``; no I/O, no waiting."""
        with self._lock:
            return self._recent.get(token)

    def authenticate(self, token: str) -> Principal | None:
        """The caller, or None for a token that graywave's store does not hold. ``InvalidToken``
        for a JWT that is refused, ``IdentityProviderUnavailable`` when its keys cannot be fetched,
        the token store's ``BackendUnavailable`` when that cannot be read. May wait on the network."""
        if self.oidc is not None and looks_like_jwt(token):
            principal: Principal | None = self.oidc.verify(token)
        else:
            principal = self.tokens.authenticate(token)
        if principal is not None:
            with self._lock:
                self._recent[token] = principal
        return principal


class OidcVerifier:
    """Verifies the JWTs of one OpenID Connect issuer (see the module's docstring)."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        user_claim: str = "sub",
        jwks_url: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        timeout_s: float = FETCH_TIMEOUT_S,
    ):
        self.issuer, self.audience, self.user_claim = issuer, audience, user_claim
        self.keys = OidcKeys(issuer, jwks_url, clock=clock, timeout_s=timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcVerifier | None:
        """The verifier that the settings ask for; None when ``GRAYWAVE_OIDC_ISSUER`` is not set."""
        if settings.oidc_issuer is None or settings.oidc_audience is None:  # Settings requires both or neither
            return None
        return cls(settings.oidc_issuer, settings.oidc_audience, settings.oidc_user_claim, settings.oidc_jwks_url)

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise InvalidToken(f"the token is not a well-formed JWT ({error})") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:  # none, HS256 (a public key used as a secret), ...
            raise InvalidToken(
                f"the token's algorithm {repr(algorithm)[:40]} is not accepted: only {', '.join(ALGORITHMS)}"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token names no signing key (kid)")
        key = self.keys.key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud"], "enforce_minimum_key_length": True},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("the token is not meant for this API (aud)") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("the token is not from the identity provider that this API trusts (iss)") from None
        except jwt.MissingRequiredClaimError as error:
            raise InvalidToken(f"the token has no {error.claim} claim") from None
        except jwt.PyJWTError as error:  # the signature, a key too short, a malformed claim
            raise InvalidToken(f"the token is not valid ({error})") from None
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        user = claims.get(self.user_claim)
        if not isinstance(user, str):
            raise InvalidToken(f"the token's {self.user_claim} claim is missing or not a string")
        problem = "longer than 64 characters" if len(user) > 64 else user_id_problem(user)
        if problem:
            raise InvalidToken(f"the token's {self.user_claim} claim is not a graywave user id: {problem}")
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise InvalidToken("the token's scope claim is not a string of space-separated scopes")
        if ADMIN_SCOPE in scope.split():
            return Principal(label=user, user_id=None, admin=True)
        return Principal(label=user, user_id=user, admin=False)


class OidcKeys:
    """The identity provider's signing keys by ``kid``, fetched at most once per ``REFRESH_INTERVAL_S``
    (see the module's docstring). Thread-safe; the lock guards the fields only, never the network."""

    def __init__(
        self,
        issuer: str,
        jwks_url: str | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        timeout_s: float = FETCH_TIMEOUT_S,
    ):
        self.issuer, self.jwks_url, self.clock, self.timeout_s = issuer, jwks_url, clock, timeout_s
        self.fetches = 0
        """Fetches started (a discovery and a JWKS count as one)."""
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._tried_at: float | None = None
        self._failed = False
        self._running: Future[None] | None = None

    def key(self, kid: str) -> jwt.PyJWK:
        """The key named ``kid``; fetched when it is not known. ``InvalidToken`` when the provider's
        keys do not hold it, ``IdentityProviderUnavailable`` when they cannot be fetched now."""
        with self._lock:
            now = self.clock()
            may_fetch = self._tried_at is None or now - self._tried_at >= REFRESH_INTERVAL_S
            known = self._keys.get(kid)
            if known is not None:
                stale = self._fetched_at is not None and now - self._fetched_at >= KEYS_MAX_AGE_S
                if stale and may_fetch and self._running is None:
                    self._start(now)  # in the background: this request goes on with the key it has
                return known
            running = self._running or (self._start(now) if may_fetch else None)
            if running is None:
                return self._refused(kid, now)
        try:
            running.result(timeout=self.timeout_s)
        except FutureTimeout:
            raise IdentityProviderUnavailable(
                f"the identity provider's keys did not come within {self.timeout_s:g} s", self._retry_after()
            ) from None
        except IdentityProviderUnavailable as error:
            raise IdentityProviderUnavailable(str(error), self._retry_after()) from None
        with self._lock:
            found = self._keys.get(kid)
            if found is None:
                return self._refused(kid, self.clock())
            return found

    def _refused(self, kid: str, now: float) -> jwt.PyJWK:
        """No key ``kid`` after the last fetch, which was less than ``REFRESH_INTERVAL_S`` ago."""
        if self._failed:
            raise IdentityProviderUnavailable(
                "the identity provider's keys could not be fetched (see the log)", self._retry_after(now)
            )
        raise InvalidToken(f"the token's signing key {kid[:64]!r} is not one of the identity provider's keys")

    @property
    def _fetch_timeout_s(self) -> float:
        """The fetch's own socket timeout: longer than a request waits (``LATE_ANSWER_S``), so the
        request gives up first, with its own message, and a late answer is kept."""
        return self.timeout_s + LATE_ANSWER_S

    def _retry_after(self, now: float | None = None) -> float:
        if self._tried_at is None:
            return REFRESH_INTERVAL_S
        now = self.clock() if now is None else now
        return max(1.0, REFRESH_INTERVAL_S - (now - self._tried_at))

    def _start(self, now: float) -> Future[None]:
        """Start a fetch on a thread of its own (under the lock); its future ends when the keys are in."""
        future: Future[None] = Future()
        self._running, self._tried_at = future, now
        self.fetches += 1
        threading.Thread(target=self._fetch, args=(future, now), name="graywave-jwks", daemon=True).start()
        return future

    def _fetch(self, future: Future[None], started: float) -> None:
        try:
            keys = self._download()
        except Exception as error:  # noqa: BLE001 - whatever the network or provider did: the known keys stay
            logger.warning("the identity provider's keys were not fetched: %s", error)
            with self._lock:
                self._failed, self._running = True, None
            future.set_exception(
                error
                if isinstance(error, IdentityProviderUnavailable)
                else IdentityProviderUnavailable(str(error), REFRESH_INTERVAL_S)
            )
            return
        with self._lock:
            self._keys, self._fetched_at, self._failed, self._running = keys, started, False, None
        future.set_result(None)

    def _download(self) -> dict[str, jwt.PyJWK]:
        url = self.jwks_url or self._discover()
        try:
            found = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=self._fetch_timeout_s).get_signing_keys()
        except (jwt.PyJWTError, ValueError, OSError) as error:
            raise IdentityProviderUnavailable(
                f"the identity provider's keys at {url} cannot be fetched or read ({type(error).__name__}: {error})",
                REFRESH_INTERVAL_S,
            ) from None
        keys = {key.key_id: key for key in found if key.key_id and key.algorithm_name in ALGORITHMS}
        if not keys:
            raise IdentityProviderUnavailable(
                f"the identity provider's keys at {url} hold no key for {', '.join(ALGORITHMS)}", REFRESH_INTERVAL_S
            )
        return keys

    def _discover(self) -> str:
        """The ``jwks_uri`` of the issuer's discovery document, fetched once (kept once found)."""
        url = self.issuer.rstrip("/") + DISCOVERY_PATH
        try:
            # The issuer is an http(s) URL (Settings checks it): no file:// or other scheme reaches urlopen.
            with urllib.request.urlopen(url, timeout=self._fetch_timeout_s) as response:  # nosec B310
                document = json.loads(response.read(MAX_DISCOVERY_BYTES + 1)[:MAX_DISCOVERY_BYTES])
        except (OSError, ValueError) as error:  # URLError, HTTPError and timeouts are OSErrors
            raise IdentityProviderUnavailable(
                f"the identity provider's discovery document {url} cannot be fetched or read"
                f" ({type(error).__name__}: {error})",
                REFRESH_INTERVAL_S,
            ) from None
        jwks = document.get("jwks_uri") if isinstance(document, dict) else None
        issuer = document.get("issuer") if isinstance(document, dict) else None
        if issuer != self.issuer or not isinstance(jwks, str) or not jwks.startswith(("https://", "http://")):
            raise IdentityProviderUnavailable(
                f"the discovery document {url} does not name the issuer {self.issuer!r} (it says {issuer!r}) and"
                " an http(s) jwks_uri; check GRAYWAVE_OIDC_ISSUER, or set GRAYWAVE_OIDC_JWKS_URL",
                REFRESH_INTERVAL_S,
            )
        self.jwks_url = jwks
        return jwks
