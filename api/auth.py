"""Who is calling: the bearer token is read here, once per request, and nowhere else.

``principal_of`` reads the ``Authorization`` header of a request's ASGI scope, asks the app's
``Authenticator`` (``service.identity``: graywave's own tokens and the identity provider's JWTs)
on a worker thread (it may wait on the network: the identity provider's keys, the token store)
unless it accepted the token in the last ``RECENT_S`` (then on the event loop, without waiting),
and keeps the outcome, the caller or the refusal, in the scope's state. The early-refusal
middleware (``api.limits``) calls it before a body is read, and the routes' ``caller`` dependency
(``api.deps``) gets the same outcome without asking again; a request without a body is
authenticated by ``caller`` alone, so the routes that need no token (the probes, the docs) never
authenticate.

Why not Starlette's ``AuthenticationMiddleware`` (a backend, ``on_error``, routes reading
``request.user``), weighed and left: it authenticates every request before routing, so

- a probe, a docs page or an unknown path sent with a token would be authenticated too, and a bad
  token there (or the identity provider down) would turn a 200 or a 404 into a 401 or a 503; a load
  balancer's probe must not depend on the identity provider (``tests/api/test_api.py``,
  ``tests/api/test_oidc.py``: no authentication for the probes);
- a GET would be authenticated on every request whether its route needs it or not;
- its ``on_error`` gets only ``AuthenticationError``: the 503s (the token store, the provider's keys,
  with ``Retry-After``) would travel inside it, or the backend would answer ``None`` and keep the
  refusal in the scope, which is what this module does.

Its backend could authenticate only requests with a body (the early refusal) and leave the rest
to the routes, but then a route would read ``request.user`` or ask again: two places. So the token
is read here only: ``bearer_token`` is the one parser, ``principal_of`` the one entry point, and
the dependency in ``api.deps`` that shows the bearer scheme in the OpenAPI document reads nothing.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
from starlette.types import Scope

from graywave.api.errors import TOKEN_STORE_UNAVAILABLE, ApiError, logger
from graywave.errors import BackendUnavailable
from graywave.service.identity import IdentityProviderUnavailable, InvalidToken
from graywave.service.tokens import Principal

OUTCOME = "graywave.principal"
"""The key of the outcome (a ``Principal`` or the ``ApiError`` that refuses) in ``scope["state"]``."""
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def bearer_token(scope: Scope) -> str | None:
    """The token of the request's ``Authorization: Bearer`` header (the first such header, as
    Starlette reads one), or None."""
    for name, value in scope["headers"]:
        if name.lower() == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


async def principal_of(scope: Scope, state: Any) -> Principal:
    """The caller of this request (``state``: the app's ``api.deps.State``), authenticated at most
    once per request; ``ApiError`` (401, 503) when there is none."""
    kept: dict[str, Any] = scope.setdefault("state", {})
    outcome = kept.get(OUTCOME)
    if outcome is None:
        outcome = kept[OUTCOME] = await _authenticate(scope, state)
    if isinstance(outcome, ApiError):
        raise outcome
    principal: Principal = outcome
    return principal


async def _authenticate(scope: Scope, state: Any) -> Principal | ApiError:
    token = bearer_token(scope)
    if token is None:
        return ApiError(401, "a bearer token is required", headers=CHALLENGE)
    recent: Principal | None = state.auth.recent(token)  # a phone's burst: one store read, not one per request
    if recent is not None:
        return recent
    try:
        principal = await anyio.to_thread.run_sync(state.auth.authenticate, token)
    except InvalidToken as error:
        challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        return ApiError(401, f"the bearer token is not valid: {error}", "invalid_token", challenge)
    except IdentityProviderUnavailable as error:
        logger.error("the identity provider cannot be reached: %s", error)
        return ApiError(
            503,
            "the identity provider's keys cannot be fetched now; try again later",
            "identity_provider_unavailable",
            {"Retry-After": str(math.ceil(error.retry_after_s))},
        )
    except BackendUnavailable as error:
        logger.error("the token store cannot be read: %s", error)
        return ApiError(503, TOKEN_STORE_UNAVAILABLE)
    if principal is None:
        return ApiError(401, "the bearer token is not valid", headers=CHALLENGE)
    outcome: Principal = principal
    return outcome
