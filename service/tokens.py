"""Bearer tokens: a user token reads and writes its own user's images and results; an admin token all.

Tokens are random (``secrets``), shown once when issued, and stored only as SHA-256 digests, in the
token store that every API process and machine shares (``graywave.storage.tokens``): a SQLite file
(``GRAYWAVE_API_TOKENS_DB``) on the embedded default, MongoDB collections when
``GRAYWAVE_MONGODB_URI`` is set. A presented token is hashed and its digest looked up as the store's
key: one read, however many tokens there are. That is timing-safe without a constant-time
comparison, because a caller cannot choose the digest that is looked up. The store caches nothing;
an API process remembers a token it accepted for ``service.identity.RECENT_S`` (0.5 s), so a
revoked token is refused by every process within that time. Tokens are never logged.

A token file of the versions before (``GRAYWAVE_API_TOKENS_FILE``, JSON) is migrated when the store
is opened: its tokens are copied into the store (a token already there is left alone, so two
processes migrating at once, or a migration run again, change nothing), then it is renamed aside
to ``<name>.migrated``.

A store that cannot be read (a damaged file, MongoDB unreachable) is ``TokenStoreUnavailable``: the
API answers 503 and the CLI refuses, naming it.

    graywave token issue alice                 # a token for user alice
    graywave token issue ops --admin           # an admin token labelled "ops"
    graywave token issue --from-file users.txt # one token per user id, "user<TAB>token" lines out
    graywave token list --limit 100            # ids, labels, users; never the tokens
    graywave token revoke 3f9a2c1b7d6e         # refused everywhere within 0.5 s
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from graywave.config import Settings
from graywave.errors import InvalidInput
from graywave.storage.layout import user_id_problem
from graywave.storage.tokens import (
    MongoTokens,
    SqliteTokens,
    TokenRecords,
    TokenRow,
    TokenStoreUnavailable,
    read_legacy_file,
)

__all__ = ["Principal", "TokenInfo", "TokenStore", "TokenStoreUnavailable", "issue_token", "open_token_store"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin, or the owner of one user's data."""

    label: str
    user_id: str | None
    admin: bool

    def may_access(self, user_id: str) -> bool:
        return self.admin or self.user_id == user_id


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


TOKEN_ID_LENGTH = 12
"""A token's id: the first hex digits of its digest. It names a token (to list, to revoke) without
giving any of it away."""

ISSUE_CHUNK = 10_000
"""Tokens stored in one transaction (one bulk insert) when many are issued at once."""

IDEMPOTENCY_TTL_S = 24 * 3600.0
"""How long an idempotency key and its answer are kept."""

IDEMPOTENCY_LEASE_S = 600.0
"""A claimed key left unanswered this long (its process died mid-request) may be claimed again."""

PURGE_EVERY_S = 60.0
"""The least time between two purges of expired idempotency keys, per process."""

MAX_IDEMPOTENCY_KEY_LENGTH = 255
_IDEMPOTENCY_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}")


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    label: str
    user_id: str | None
    admin: bool


def _info(row: TokenRow) -> TokenInfo:
    return TokenInfo(row.sha256[:TOKEN_ID_LENGTH], row.label, row.user_id, row.admin)


@dataclass(frozen=True)
class Replay:
    """The answer given to the first request with this idempotency key."""

    status: int
    body: bytes


@dataclass(frozen=True)
class Resume:
    """The first request with this key stored its upload and failed before it answered: answer from
    what it stored (``key``, ``pending``), storing nothing."""

    key_id: str
    owner: str
    key: str
    pending: str | None


STORED = -1
"""The status of a key whose request stored its upload and has not answered yet (its body: the
upload's key and why it is pending, JSON)."""


@dataclass(frozen=True)
class Claim:
    """This request holds the idempotency key: it runs, then ``answered`` or ``abandoned``."""

    key_id: str
    owner: str


class KeyInFlight:
    """Another request with this key is running now."""


class KeyReused:
    """This key was used for a different request (another file or other parameters)."""


IN_FLIGHT, REUSED = KeyInFlight(), KeyReused()


class TokenStore:
    """The tokens and idempotency keys of one deployment, in its token store."""

    def __init__(self, records: TokenRecords):
        self.records = records
        self._purged = 0.0

    @property
    def where(self) -> str:
        return self.records.where

    def authenticate(self, token: str) -> Principal | None:
        row = self.records.find(_digest(token))
        return None if row is None else Principal(row.label, row.user_id, row.admin)

    def issue(self, label: str, admin: bool) -> str:
        """Create a token, store its digest, and return the token (the only time it is seen)."""
        problem = None if admin else user_id_problem(label)
        if problem:
            raise InvalidInput(problem)
        token = _new_token()
        self.records.insert([TokenRow(_digest(token), label, None if admin else label, admin)])
        return token

    def issue_many(self, users: list[str]) -> Iterator[list[tuple[str, str]]]:
        """User tokens for ``users`` (valid, distinct user ids: ``read_user_ids``), stored
        ``ISSUE_CHUNK`` at a time, each chunk in one transaction; yields each chunk's ``(user,
        token)`` pairs once it is stored. A chunk that fails stores none of its tokens (in MongoDB,
        any it stored were never shown to anyone, so cannot be used)."""
        for start in range(0, len(users), ISSUE_CHUNK):
            issued = [(user, _new_token()) for user in users[start : start + ISSUE_CHUNK]]
            self.records.insert([TokenRow(_digest(token), user, user, False) for user, token in issued])
            yield issued

    def page(self, limit: int, after: str = "") -> list[TokenInfo]:
        """At most ``limit`` tokens, by id, after the token id ``after`` (never the tokens, which
        are not stored). The next page starts after the last id of this one."""
        after = _token_id_or_empty(after)
        return [_info(row) for row in self.records.page(limit, after + "~" if after else "")]  # "~" sorts past hex

    def revoke(self, token_id: str) -> TokenInfo:
        """Remove the token whose id is (or starts with, 6 digits at least) ``token_id``: every
        process refuses it within ``service.identity.RECENT_S``. ``InvalidInput`` if that names none, or several."""
        prefix = token_id.lower()
        if len(prefix) < 6:
            raise InvalidInput("give at least 6 digits of the token id (graywave token list)")
        if not re.fullmatch(r"[0-9a-f]{6,64}", prefix):
            raise InvalidInput(f"{token_id!r} is not a token id: hex digits (graywave token list)")
        matching = self.records.with_prefix(prefix, 2)
        if len(matching) != 1:
            named = "no token" if not matching else "several tokens"
            raise InvalidInput(f"{token_id!r} names {named}: see graywave token list")
        if not self.records.delete(matching[0].sha256):
            raise InvalidInput(f"{token_id!r} names no token (revoked meanwhile)")
        return _info(matching[0])

    def migrate(self, legacy: Path) -> int:
        """Copy the tokens of a legacy JSON token file into the store, then rename it aside; the
        number of tokens that were new. Nothing to do when there is no such file."""
        rows = read_legacy_file(legacy)
        if rows is None:
            return 0
        added = self.records.insert_missing(rows)
        try:
            os.replace(legacy, legacy.with_name(f"{legacy.name}.migrated"))
        except FileNotFoundError:  # another process migrated it at the same time: the same tokens
            pass
        except OSError as error:
            raise TokenStoreUnavailable(
                f"the API token file {legacy} was migrated but cannot be renamed aside"
                f" ({type(error).__name__}: {error.strerror or error})"
            ) from None
        return added

    # Idempotency keys (POST /images/{user_id} with an Idempotency-Key header)

    def begin(self, user_id: str, key: str, fingerprint: str) -> Claim | Replay | Resume | KeyInFlight | KeyReused:
        """Claim ``key`` of ``user_id`` for a request whose digest is ``fingerprint``, atomically
        across processes: a ``Claim`` to run it; the first answer (``Replay``) when that request
        was answered; ``IN_FLIGHT`` while it runs; ``REUSED`` for a different request."""
        if not _IDEMPOTENCY_KEY.fullmatch(key):
            raise InvalidInput(
                f"an Idempotency-Key is 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII characters, without spaces"
            )
        now = time.time()
        if now - self._purged >= PURGE_EVERY_S:
            self._purged = now
            self.records.purge(now)
        key_id, owner = f"{user_id}\n{key}", uuid.uuid4().hex
        held = self.records.claim(key_id, fingerprint, owner, now, IDEMPOTENCY_TTL_S, IDEMPOTENCY_LEASE_S)
        if not hmac.compare_digest(held.fingerprint, fingerprint):
            return REUSED
        if held.owner == owner:
            return Claim(key_id, owner)
        if held.status is None or held.body is None:
            return IN_FLIGHT
        if held.status == STORED:
            stored = json.loads(held.body)
            return Resume(key_id, owner, stored["key"], stored["pending"])
        return Replay(held.status, held.body)

    def stored(self, claim: Claim, key: str, pending: str | None) -> None:
        """The claimed request stored its upload as ``key``: should it fail before it answers, a retry
        answers from it (``Resume``) instead of storing it again."""
        self.records.answer(claim.key_id, claim.owner, STORED, json.dumps({"key": key, "pending": pending}).encode())

    def answered(self, claim: Claim | Resume, status: int, body: bytes) -> None:
        """Keep the answer to the claimed request: its retries get it (for ``IDEMPOTENCY_TTL_S``)."""
        self.records.answer(claim.key_id, claim.owner, status, body)

    def abandoned(self, claim: Claim) -> None:
        """The claimed request failed without an answer to keep: a retry runs it again."""
        self.records.release(claim.key_id, claim.owner)

    def close(self) -> None:
        self.records.close()


def request_fingerprint(*parts: bytes | str | None) -> str:
    """The SHA-256 of a request's parts (the file's bytes, its name and type, the parameters), each
    length-prefixed so that no two different requests share one."""
    digest = hashlib.sha256()
    for part in parts:
        data = b"\xff" if part is None else part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def _new_token() -> str:
    return f"gw_{secrets.token_urlsafe(32)}"


def _token_id_or_empty(token_id: str) -> str:
    if token_id and not re.fullmatch(r"[0-9a-f]{1,64}", token_id):
        raise InvalidInput(f"{token_id!r} is not a token id: hex digits (graywave token list)")
    return token_id


def open_token_store(settings: Settings) -> TokenStore:
    """The deployment's token store: MongoDB when ``GRAYWAVE_MONGODB_URI`` is set, the SQLite file
    ``GRAYWAVE_API_TOKENS_DB`` otherwise; a legacy JSON token file is migrated into it first."""
    records: TokenRecords
    if settings.mongodb_uri is not None:
        records = MongoTokens(settings.mongodb_uri.get_secret_value(), settings.mongodb_database)
    else:
        records = SqliteTokens(settings.api_tokens_db_path)
    store = TokenStore(records)
    try:
        store.migrate(settings.api_tokens_file)
    except BaseException:
        store.close()
        raise
    return store


def issue_token(settings: Settings, label: str, admin: bool) -> str:
    """One token issued in the deployment's token store (which is opened and closed for it)."""
    store = open_token_store(settings)
    try:
        return store.issue(label, admin)
    finally:
        store.close()


def read_user_ids(lines: Iterable[str]) -> list[str]:
    """The user ids of a provisioning file, one a line (a trailing ``\\r`` is allowed). Every line is
    checked before anything is issued: ``InvalidInput`` naming each bad line's number (up to 10)."""
    users: list[str] = []
    seen: dict[str, int] = {}
    problems: list[str] = []
    for number, line in enumerate(lines, 1):
        user = line.removesuffix("\n").removesuffix("\r")
        problem = user_id_problem(user)
        if problem:
            problems.append(f"line {number}: {problem}")
        elif user in seen:
            problems.append(f"line {number}: user {user!r} is on line {seen[user]} too")
        else:
            seen[user] = number
            users.append(user)
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise InvalidInput(f"{len(problems)} bad lines, no token issued: " + "; ".join(problems[:10]) + more)
    if not users:
        raise InvalidInput("no user ids in the file, no token issued")
    return users
