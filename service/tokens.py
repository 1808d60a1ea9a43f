"""Bearer tokens: a user token reads and writes its own user's images and results; an admin token all.

Tokens are random (``secrets``), shown once when issued, and stored only as SHA-256 digests in
``GRAYWAVE_API_TOKENS_FILE`` (mode 0600). A presented token is hashed and compared with every
stored digest by ``hmac.compare_digest``; tokens are never logged.

Issuing holds a file lock beside the file and writes a temporary file of a unique name that then
replaces it, so concurrent ``token issue`` commands lose no token and readers never see half a
file. A file that is not valid anyway (edited by hand, a full disk) is an error that says so: the
API answers 503 and the CLI refuses to issue, rather than overwrite it. So is a file that cannot be
read as one: a folder, a link to a device (``/dev/zero``), a FIFO, text that is not UTF-8, more than
``MAX_TOKEN_FILE_BYTES``. The file is opened without blocking and read up to that bound, never
further, so that no token file can freeze the API or fill its memory
(``TokenStoreUnavailable``: its message names the path, for the log and the CLI only).

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
import stat
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


MAX_TOKEN_FILE_BYTES = 16 * 1024 * 1024
"""A token file larger than this is not read (about 100,000 tokens: an entry is about 150 bytes)."""


class TokenStoreUnavailable(BackendUnavailable):
    """The token file cannot be read, or is not a valid one. The message names the file's path: the
    API logs it and answers a 503 that names the token store only."""


class TokenStore:
    """The stored digests, read again whenever the file changes (a new token works at once)."""

    def __init__(self, path: Path):
        self.path = path
        self._version: tuple[int, ...] | None = None
        self._entries: list[tuple[str, Principal]] = []

    def _refresh(self) -> None:
        version = _version(self.path)
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


def _version(path: Path) -> tuple[int, ...] | None:
    """What changes when the file does (a replacement is a new inode); None when there is no file."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    except OSError as error:  # a folder on the way that is a file, a loop of links, no permission
        raise _unreadable(path, error) from None
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)


def _unreadable(path: Path, error: OSError | str) -> TokenStoreUnavailable:
    reason = error if isinstance(error, str) else f"{type(error).__name__}: {error.strerror or error}"
    return TokenStoreUnavailable(
        f"the API token file {path} cannot be read ({reason}); restore it from a backup, or move it away"
        " and issue the tokens again"
    )


def _read_bounded(path: Path) -> bytes | None:
    """The file's bytes, or None when there is none. A regular file only (a link to one is fine),
    opened without blocking (a FIFO would wait for a writer), of ``MAX_TOKEN_FILE_BYTES`` at most."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _unreadable(path, error) from None
    try:
        found = os.fstat(descriptor)
        if not stat.S_ISREG(found.st_mode):
            raise _unreadable(path, "not a regular file")
        if found.st_size > MAX_TOKEN_FILE_BYTES:
            raise _unreadable(path, f"{found.st_size} bytes, more than {MAX_TOKEN_FILE_BYTES}")
        chunks, left = [], MAX_TOKEN_FILE_BYTES + 1
        while left > 0 and (chunk := os.read(descriptor, min(left, 1024 * 1024))):
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as error:  # EIO of a failing disk
        raise _unreadable(path, error) from None
    finally:
        os.close(descriptor)
    if left <= 0:  # it grew past the bound while it was read
        raise _unreadable(path, f"more than {MAX_TOKEN_FILE_BYTES} bytes")
    return b"".join(chunks)


def _read(path: Path) -> list[dict[str, Any]]:
    """The stored entries; none when there is no file yet."""
    data = _read_bounded(path)
    if data is None:
        return []
    try:
        entries = json.loads(data.decode("utf-8"))["tokens"]
        if not all(
            isinstance(e["sha256"], str)
            and isinstance(e["label"], str)
            and isinstance(e["admin"], bool)
            and isinstance(e.get("user_id"), str | None)
            for e in entries
        ):
            raise ValueError(
                "an entry's sha256 or label is not a string, its user_id not a string or null, or its admin"
                " not a boolean"
            )
        return list(entries)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:  # UnicodeDecodeError too
        raise TokenStoreUnavailable(
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(path.with_name(f"{path.name}.lock")):
            entries = _read(path)
            yield entries
            descriptor, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
            try:
                with os.fdopen(descriptor, "w") as out:
                    json.dump({"tokens": entries}, out, indent=2)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, path)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
    except OSError as error:  # a read-only or full disk, a folder where the file or its folder should be
        raise TokenStoreUnavailable(
            f"the API token file {path} cannot be written ({type(error).__name__}: {error.strerror or error})"
        ) from None
