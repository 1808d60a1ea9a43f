"""Where the API's bearer tokens and idempotency keys are kept: a SQLite file on the embedded default,
MongoDB collections when MongoDB is configured. Every API process and machine on one configuration
reads and writes the same set; nothing is cached here.

A token is stored as the SHA-256 hex digest of the token (never the token), as the key of its row:
a lookup is one primary-key read. The use cases (issuing, authenticating, the idempotent upload) are
in ``graywave.service.tokens``; this module only stores and finds.

SQLite: WAL mode (readers never wait for a writer), a busy timeout for writers, one connection per
thread. Before a connection is used the file's identity (device, inode, size, modification time) is
compared with the one it was opened on, and a file replaced or changed under it is opened again: a
restored backup or a damaged file is seen by the next request. A path that is not a regular file
(a folder, a FIFO, a device) is refused before SQLite opens it, so that nothing can block on it.

    tokens(sha256 PRIMARY KEY, label, user_id, admin)
    idempotency_keys(id PRIMARY KEY, fingerprint, owner, claimed_at, expires_at, status, body)
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pymongo
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError, PyMongoError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random

from graywave.errors import BackendUnavailable

BUSY_TIMEOUT_S = 10.0
"""How long a SQLite writer waits for another process's write transaction before giving up."""

MAX_LEGACY_FILE_BYTES = 64 * 1024 * 1024
"""A legacy JSON token file larger than this is not read (about 400,000 tokens)."""

TOKENS_COLLECTION = "api_tokens"
KEYS_COLLECTION = "idempotency_keys"


class TokenStoreUnavailable(BackendUnavailable):
    """The token store cannot be read or written. The message names where it is: the API logs it
    and answers a 503 that names the token store only."""


@dataclass(frozen=True)
class TokenRow:
    sha256: str
    label: str
    user_id: str | None
    admin: bool


@dataclass(frozen=True)
class KeyRow:
    """A claimed idempotency key: the request's fingerprint and, once answered, the answer."""

    fingerprint: str
    owner: str
    claimed_at: float
    status: int | None
    body: bytes | None


class TokenRecords(Protocol):
    """The stored tokens and idempotency keys (SQLite or MongoDB)."""

    where: str

    def find(self, sha256: str) -> TokenRow | None: ...

    def insert(self, rows: Sequence[TokenRow]) -> None:
        """Store new tokens, all of them or none (one transaction; one ordered bulk insert in MongoDB)."""

    def insert_missing(self, rows: Sequence[TokenRow]) -> int:
        """Store the tokens not stored yet (a migration run twice, or by two processes at once)."""

    def page(self, limit: int, after: str) -> list[TokenRow]:
        """At most ``limit`` tokens whose digest is greater than ``after``, in digest order."""

    def with_prefix(self, prefix: str, limit: int) -> list[TokenRow]: ...

    def delete(self, sha256: str) -> bool: ...

    def claim(self, key_id: str, fingerprint: str, owner: str, now: float, ttl_s: float, lease_s: float) -> KeyRow:
        """Claim ``key_id`` for ``owner`` unless a live claim holds it (atomically); the row that
        holds it now: ``owner`` is ours when the claim was made. An expired key, or a claim left
        unanswered for longer than ``lease_s`` (its process died), is claimed afresh."""

    def answer(self, key_id: str, owner: str, status: int, body: bytes) -> None:
        """Keep ``status`` and ``body`` for ``key_id``: while ``owner`` holds it unanswered, or while
        its status is negative (a step done, the answer still to come: any request may finish it)."""

    def release(self, key_id: str, owner: str) -> None: ...

    def purge(self, now: float) -> int: ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    sha256 TEXT PRIMARY KEY, label TEXT NOT NULL, user_id TEXT, admin INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency_keys (
    id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, owner TEXT NOT NULL, claimed_at REAL NOT NULL,
    expires_at REAL NOT NULL, status INTEGER, body BLOB
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_keys_expiry ON idempotency_keys (expires_at);
"""


def _set_up(connection: sqlite3.Connection) -> None:
    """WAL mode and the schema. Switching to WAL takes an exclusive lock, and SQLite answers "database
    is locked" at once, without its busy timeout, to a connection whose lock upgrade would deadlock
    with another's (two processes creating the file together): the caller retries."""
    if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash; WAL keeps it consistent
    connection.executescript(_SCHEMA)


def _locked(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)


def _identity(found: os.stat_result) -> tuple[int, ...]:
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)


class SqliteTokens:
    """The tokens in a SQLite file (``GRAYWAVE_API_TOKENS_DB``), one connection per thread."""

    def __init__(self, path: Path):
        self.path = path
        self.where = f"the API token database {path}"
        self._local = threading.local()
        self._connection()  # created (and its schema) now: a store that cannot be opened says so at once

    def _unavailable(self, reason: object) -> TokenStoreUnavailable:
        return TokenStoreUnavailable(
            f"{self.where} cannot be used ({reason}); restore it from a backup, or move it away and issue the"
            " tokens again"
        )

    def _stat(self) -> os.stat_result | None:
        try:
            found = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as error:  # a folder on the way that is a file, a loop of links, no permission
            raise self._unavailable(f"{type(error).__name__}: {error.strerror or error}") from None
        if not stat.S_ISREG(found.st_mode):  # a folder, a FIFO (SQLite would wait on it), a device
            raise self._unavailable("not a regular file")
        return found

    def _connection(self) -> sqlite3.Connection:
        local = self._local
        found = self._stat()
        if found is not None and getattr(local, "identity", None) == _identity(found):
            connection: sqlite3.Connection = local.connection
            return connection
        if getattr(local, "connection", None) is not None:
            local.connection.close()
            local.connection = local.identity = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise self._unavailable(f"{type(error).__name__}: {error}") from None
        try:
            os.chmod(self.path, 0o600)  # digests only, but nobody else's business
            for attempt in Retrying(
                retry=retry_if_exception(_locked),
                stop=stop_after_delay(BUSY_TIMEOUT_S),
                wait=wait_random(0.01, 0.2),
                reraise=True,
            ):
                with attempt:
                    _set_up(connection)
            found = self._stat()
        except (OSError, sqlite3.Error) as error:
            connection.close()
            raise self._unavailable(f"{type(error).__name__}: {error}") from None
        if found is None:  # pragma: no cover - removed between the open and the stat
            connection.close()
            raise self._unavailable("removed while it was opened")
        local.connection, local.identity = connection, _identity(found)
        return connection

    def _run(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._connection().execute(sql, parameters)
        except sqlite3.Error as error:
            self._forget()
            raise self._unavailable(f"{type(error).__name__}: {error}") from None

    def _forget(self) -> None:
        """Close this thread's connection: the next use opens the file again."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        self._local.connection = self._local.identity = None

    def _transaction(self, work: Any) -> Any:
        """``work(connection)`` in one write transaction (``BEGIN IMMEDIATE``: the write lock first)."""
        connection = self._connection()
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = work(connection)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            self._forget()
            raise self._unavailable(f"{type(error).__name__}: {error}") from None
        self._remember()
        return result

    def _remember(self) -> None:
        """After a write: the file's identity as this connection left it (its own write is no change)."""
        found = self._stat()
        if found is not None:
            self._local.identity = _identity(found)

    def find(self, sha256: str) -> TokenRow | None:
        row = self._run("SELECT label, user_id, admin FROM tokens WHERE sha256 = ?", (sha256,)).fetchone()
        return None if row is None else TokenRow(sha256, row[0], row[1], bool(row[2]))

    def insert(self, rows: Sequence[TokenRow]) -> None:
        values = [(r.sha256, r.label, r.user_id, int(r.admin)) for r in rows]
        self._transaction(lambda c: c.executemany("INSERT INTO tokens VALUES (?, ?, ?, ?)", values))

    def insert_missing(self, rows: Sequence[TokenRow]) -> int:
        values = [(r.sha256, r.label, r.user_id, int(r.admin)) for r in rows]
        inserted: int = self._transaction(
            lambda c: c.executemany("INSERT OR IGNORE INTO tokens VALUES (?, ?, ?, ?)", values).rowcount
        )
        return inserted

    def page(self, limit: int, after: str) -> list[TokenRow]:
        found = self._run(
            "SELECT sha256, label, user_id, admin FROM tokens WHERE sha256 > ? ORDER BY sha256 LIMIT ?", (after, limit)
        )
        return [TokenRow(r[0], r[1], r[2], bool(r[3])) for r in found.fetchall()]

    def with_prefix(self, prefix: str, limit: int) -> list[TokenRow]:
        found = self._run(
            "SELECT sha256, label, user_id, admin FROM tokens WHERE sha256 >= ? AND sha256 < ? ORDER BY sha256 LIMIT ?",
            (prefix, prefix + "g", limit),  # hex digits sort below "g"
        )
        return [TokenRow(r[0], r[1], r[2], bool(r[3])) for r in found.fetchall()]

    def delete(self, sha256: str) -> bool:
        deleted: int = self._transaction(lambda c: c.execute("DELETE FROM tokens WHERE sha256 = ?", (sha256,)).rowcount)
        return deleted == 1

    def claim(self, key_id: str, fingerprint: str, owner: str, now: float, ttl_s: float, lease_s: float) -> KeyRow:
        def work(c: sqlite3.Connection) -> KeyRow:
            c.execute(
                "DELETE FROM idempotency_keys"
                " WHERE id = ? AND (expires_at <= ? OR (status IS NULL AND claimed_at < ?))",
                (key_id, now, now - lease_s),
            )
            c.execute(
                "INSERT OR IGNORE INTO idempotency_keys VALUES (?, ?, ?, ?, ?, NULL, NULL)",
                (key_id, fingerprint, owner, now, now + ttl_s),
            )
            row = c.execute(
                "SELECT fingerprint, owner, claimed_at, status, body FROM idempotency_keys WHERE id = ?", (key_id,)
            ).fetchone()
            return KeyRow(row[0], row[1], row[2], row[3], row[4])

        claimed: KeyRow = self._transaction(work)
        return claimed

    def answer(self, key_id: str, owner: str, status: int, body: bytes) -> None:
        self._transaction(
            lambda c: c.execute(
                "UPDATE idempotency_keys SET status = ?, body = ?"
                " WHERE id = ? AND ((owner = ? AND status IS NULL) OR status < 0)",
                (status, body, key_id, owner),
            )
        )

    def release(self, key_id: str, owner: str) -> None:
        self._transaction(
            lambda c: c.execute(
                "DELETE FROM idempotency_keys WHERE id = ? AND owner = ? AND status IS NULL", (key_id, owner)
            )
        )

    def purge(self, now: float) -> int:
        purged: int = self._transaction(
            lambda c: c.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?", (now,)).rowcount
        )
        return purged

    def close(self) -> None:
        self._forget()


class MongoTokens:
    """The tokens in MongoDB: ``api_tokens`` keyed by the digest (``_id``, unique), and
    ``idempotency_keys`` keyed by the key's id."""

    def __init__(self, uri: str, database: str):
        self.where = f"the API token collection {database}.{TOKENS_COLLECTION} in MongoDB"
        self.client: MongoClient[dict[str, Any]] = MongoClient(
            uri, tz_aware=True, appname="graywave-tokens", serverSelectionTimeoutMS=5000, retryWrites=True
        )
        self.tokens = self.client[database][TOKENS_COLLECTION]
        self.keys = self.client[database][KEYS_COLLECTION]
        self._indexed = False  # made by the first use of the keys: opening contacts no server (the API
        # starts, and /readyz says so, while MongoDB cannot be reached)

    def _index_keys(self) -> None:
        if not self._indexed:
            self._guarded(lambda: self.keys.create_index([("expires_at", pymongo.ASCENDING)]))
            self._indexed = True

    def _guarded(self, action: Any) -> Any:
        try:
            return action()
        except PyMongoError as error:
            raise TokenStoreUnavailable(f"{self.where} cannot be used ({type(error).__name__}: {error})") from None

    def _row(self, document: dict[str, Any]) -> TokenRow:
        row = TokenRow(document["_id"], document.get("label"), document.get("user_id"), document.get("admin"))  # type: ignore[arg-type]
        if not (isinstance(row.label, str) and isinstance(row.user_id, str | None) and isinstance(row.admin, bool)):
            raise TokenStoreUnavailable(
                f"{self.where} holds a document that is not a token's (its label is not a string, its user_id"
                " not a string or null, or its admin not a boolean): restore it from a backup"
            )
        return row

    @staticmethod
    def _document(row: TokenRow) -> dict[str, Any]:
        return {"_id": row.sha256, "label": row.label, "user_id": row.user_id, "admin": row.admin}

    def find(self, sha256: str) -> TokenRow | None:
        found = self._guarded(lambda: self.tokens.find_one({"_id": sha256}))
        return None if found is None else self._row(found)

    def insert(self, rows: Sequence[TokenRow]) -> None:
        if rows:
            self._guarded(lambda: self.tokens.insert_many([self._document(r) for r in rows], ordered=True))

    def insert_missing(self, rows: Sequence[TokenRow]) -> int:
        if not rows:
            return 0
        updates = [pymongo.UpdateOne({"_id": r.sha256}, {"$setOnInsert": self._document(r)}, upsert=True) for r in rows]
        done = self._guarded(lambda: self.tokens.bulk_write(updates, ordered=False))
        return int(done.upserted_count)

    def page(self, limit: int, after: str) -> list[TokenRow]:
        found = self._guarded(lambda: list(self.tokens.find({"_id": {"$gt": after}}).sort("_id", 1).limit(limit)))
        return [self._row(d) for d in found]

    def with_prefix(self, prefix: str, limit: int) -> list[TokenRow]:
        query = {"_id": {"$gte": prefix, "$lt": prefix + "g"}}
        found = self._guarded(lambda: list(self.tokens.find(query).sort("_id", 1).limit(limit)))
        return [self._row(d) for d in found]

    def delete(self, sha256: str) -> bool:
        return bool(self._guarded(lambda: self.tokens.delete_one({"_id": sha256})).deleted_count == 1)

    def claim(self, key_id: str, fingerprint: str, owner: str, now: float, ttl_s: float, lease_s: float) -> KeyRow:
        def attempt() -> KeyRow | None:
            stale = {"$or": [{"expires_at": {"$lte": now}}, {"status": None, "claimed_at": {"$lt": now - lease_s}}]}
            self.keys.delete_one({"_id": key_id, **stale})
            document: dict[str, Any] = {
                "_id": key_id,
                "fingerprint": fingerprint,
                "owner": owner,
                "claimed_at": now,
                "expires_at": now + ttl_s,
                "status": None,
                "body": None,
            }
            try:
                self.keys.insert_one(document)
            except DuplicateKeyError:
                found = self.keys.find_one({"_id": key_id})
                if found is None:  # removed since: claim again
                    return None
                document = found
            return KeyRow(
                document["fingerprint"],
                document["owner"],
                document["claimed_at"],
                document["status"],
                None if document["body"] is None else bytes(document["body"]),
            )

        self._index_keys()
        while True:
            row: KeyRow | None = self._guarded(attempt)
            if row is not None:
                return row

    def answer(self, key_id: str, owner: str, status: int, body: bytes) -> None:
        self._guarded(
            lambda: self.keys.update_one(
                {"_id": key_id, "$or": [{"owner": owner, "status": None}, {"status": {"$lt": 0}}]},
                {"$set": {"status": status, "body": body}},
            )
        )

    def release(self, key_id: str, owner: str) -> None:
        self._guarded(lambda: self.keys.delete_one({"_id": key_id, "owner": owner, "status": None}))

    def purge(self, now: float) -> int:
        self._index_keys()
        return int(self._guarded(lambda: self.keys.delete_many({"expires_at": {"$lte": now}})).deleted_count)

    def close(self) -> None:
        self.client.close()


def read_legacy_file(path: Path) -> list[TokenRow] | None:
    """The tokens of a JSON token file of graywave before 0.x (``{"tokens": [{"sha256", "label",
    "user_id", "admin"}]}``), or None when there is none. A regular file only, opened without
    blocking and read up to ``MAX_LEGACY_FILE_BYTES``: no such file can freeze a process or fill
    its memory. One that cannot be read as one is ``TokenStoreUnavailable`` naming it."""
    data = _read_legacy_bytes(path)
    if data is None:
        return None
    try:
        return _legacy_rows(data)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:  # UnicodeDecodeError too
        raise _unreadable(path, f"not valid: {type(error).__name__}: {error}") from None


def _unreadable(path: Path, reason: object) -> TokenStoreUnavailable:
    return TokenStoreUnavailable(
        f"the API token file {path}, to be migrated, cannot be read ({reason}); restore it from a backup,"
        " or move it away and issue the tokens again"
    )


def _read_legacy_bytes(path: Path) -> bytes | None:
    """The bytes of the regular file ``path``, at most ``MAX_LEGACY_FILE_BYTES`` (``read_legacy_file``);
    None when there is no such file."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _unreadable(path, f"{type(error).__name__}: {error.strerror or error}") from None
    try:
        found = os.fstat(descriptor)
        if not stat.S_ISREG(found.st_mode):
            raise _unreadable(path, "not a regular file")
        if found.st_size > MAX_LEGACY_FILE_BYTES:
            raise _unreadable(path, f"{found.st_size} bytes, more than {MAX_LEGACY_FILE_BYTES}")
        chunks, left = [], MAX_LEGACY_FILE_BYTES + 1
        while left > 0 and (chunk := os.read(descriptor, min(left, 1024 * 1024))):
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as error:  # EIO of a failing disk
        raise _unreadable(path, f"{type(error).__name__}: {error.strerror or error}") from None
    finally:
        os.close(descriptor)
    if left <= 0:
        raise _unreadable(path, f"more than {MAX_LEGACY_FILE_BYTES} bytes")
    return b"".join(chunks)


def _legacy_rows(data: bytes) -> list[TokenRow]:
    """The rows of a legacy token file's JSON; ``ValueError`` (or the error of the JSON's wrong shape:
    ``KeyError``, ``TypeError``...) for anything else."""
    entries = json.loads(data.decode("utf-8"))["tokens"]
    rows = [TokenRow(e["sha256"], e["label"], e.get("user_id"), e["admin"]) for e in entries]
    if not all(
        isinstance(r.sha256, str)
        and isinstance(r.label, str)
        and isinstance(r.admin, bool)
        and isinstance(r.user_id, str | None)
        for r in rows
    ):
        raise ValueError(
            "an entry's sha256 or label is not a string, its user_id not a string or null, or its admin not a boolean"
        )
    return rows
