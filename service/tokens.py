"""Bearer tokens: a user token reads and writes its own user's images and results; an admin token all.

Tokens are random (``secrets``), shown once when issued, and stored only as SHA-256 digests in
``GRAYWAVE_API_TOKENS_FILE`` (mode 0600). A presented token is hashed and compared with every
stored digest by ``hmac.compare_digest``; tokens are never logged.

Issuing holds a file lock beside the file and writes a temporary file of a unique name that then
replaces it, so concurrent ``token issue`` commands lose no token and readers never see half a
file. A file that is not valid anyway (edited by hand, a full disk) is an error that says so: the
API answers 503 and the CLI refuses to issue, rather than overwrite it.

    graywave token issue alice          # a token for user alice
    graywave token issue ops --admin    # an admin token labelled "ops"
    graywave token list                 # ids, labels, users; never the tokens
    graywave token revoke 3f9a2c1b7d6e  # stops working at once
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock

from graywave.errors import BackendUnavailable, InvalidInput
from graywave.storage.layout import user_id_problem


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


class TokenStore:
    """The stored digests, read again whenever the file changes (a new token works at once)."""

    def __init__(self, path: Path):
        self.path = path
        self._version: float | None = None
        self._entries: list[tuple[str, Principal]] = []

    def _refresh(self) -> None:
        version = self.path.stat().st_mtime_ns if self.path.exists() else None
        if version != self._version:
            entries = _read(self.path)
            self._entries = [(e["sha256"], Principal(e["label"], e.get("user_id"), e["admin"])) for e in entries]
            self._version = version

    def authenticate(self, token: str) -> Principal | None:
        self._refresh()
        presented = _digest(token)
        found = None
        for digest, principal in self._entries:  # every entry, so the time does not depend on the match
            if hmac.compare_digest(digest, presented):
                found = principal
        return found


def _read(path: Path) -> list[dict[str, Any]]:
    """The stored entries; none when there is no file yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    try:
        entries = json.loads(text)["tokens"]
        if not all(
            isinstance(e["sha256"], str) and isinstance(e["label"], str) and isinstance(e["admin"], bool)
            for e in entries
        ):
            raise ValueError("an entry's sha256 or label is not a string, or its admin not a boolean")
        return list(entries)
    except (ValueError, KeyError, TypeError) as error:
        raise BackendUnavailable(
            f"the API token file {path} is not valid ({type(error).__name__}: {error}); restore it from a "
            "backup, or move it away and issue the tokens again"
        ) from None


def issue_token(path: Path, label: str, admin: bool) -> str:
    """Create a token, store its digest, and return the token (the only time it is seen)."""
    problem = None if admin else user_id_problem(label)
    if problem:
        raise InvalidInput(problem)
    token = f"gw_{secrets.token_urlsafe(32)}"
    with _changing(path) as entries:
        entries.append({"sha256": _digest(token), "label": label, "user_id": None if admin else label, "admin": admin})
    return token


TOKEN_ID_LENGTH = 12
"""A token's id: the first hex digits of its digest. It names a token (to list, to revoke) without
giving any of it away."""


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    label: str
    user_id: str | None
    admin: bool


def list_tokens(path: Path) -> list[TokenInfo]:
    """The stored tokens, by id (never the tokens themselves, which are not stored)."""
    return [TokenInfo(e["sha256"][:TOKEN_ID_LENGTH], e["label"], e.get("user_id"), e["admin"]) for e in _read(path)]


def revoke_token(path: Path, token_id: str) -> TokenInfo:
    """Remove the token whose id is (or starts with, 6 digits at least) ``token_id``: it stops working
    at once. ``InvalidInput`` if that names none, or several."""
    if len(token_id) < 6:
        raise InvalidInput("give at least 6 digits of the token id (graywave token list)")
    with _changing(path) as entries:
        matching = [e for e in entries if e["sha256"].startswith(token_id.lower())]
        if len(matching) != 1:
            named = "no token" if not matching else f"{len(matching)} tokens"
            raise InvalidInput(f"{token_id!r} names {named}: see graywave token list")
        entries.remove(matching[0])
    found = matching[0]
    return TokenInfo(found["sha256"][:TOKEN_ID_LENGTH], found["label"], found.get("user_id"), found["admin"])


@contextmanager
def _changing(path: Path) -> Iterator[list[dict[str, Any]]]:
    """The stored entries, to change in place; written back (a unique temporary file, then an atomic
    rename, under a file lock) when the block ends without an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(path.with_name(f"{path.name}.lock")):
        entries = _read(path)
        yield entries
        descriptor, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(descriptor, "w") as out:
                json.dump({"tokens": entries}, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
