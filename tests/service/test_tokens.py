"""API tokens in the shared token store: concurrent issuing loses nothing, a damaged store is an error
that says so, the legacy JSON file is migrated once, a revocation reaches every process."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import time
from pathlib import Path

import pytest

from graywave.config import Settings
from graywave.errors import BackendUnavailable, InvalidInput
from graywave.service.tokens import (
    ISSUE_CHUNK,
    TokenStoreUnavailable,
    issue_token,
    open_token_store,
    read_user_ids,
)

WRITERS, EACH = 6, 5


def _settings(folder: Path) -> Settings:
    return Settings(api_tokens_file=folder / "tokens.json", mongodb_uri=None)


def _issue_many(folder: str, writer: int, barrier) -> list[str]:
    barrier.wait()  # every writer starts at once
    return [issue_token(_settings(Path(folder)), f"user{writer}-{k}", admin=False) for k in range(EACH)]


def test_concurrent_issuing_in_several_processes_loses_no_token(tmp_path):
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager:
        barrier = manager.Barrier(WRITERS)
        with context.Pool(WRITERS) as pool:
            issued = pool.starmap(_issue_many, [(str(tmp_path), w, barrier) for w in range(WRITERS)])
    tokens = [token for batch in issued for token in batch]
    store = open_token_store(_settings(tmp_path))
    assert len(store.page(1000)) == WRITERS * EACH
    assert all(store.authenticate(token) is not None for token in tokens)  # every one of them works
    assert (tmp_path / "tokens.db").stat().st_mode & 0o077 == 0


def test_a_damaged_token_database_is_an_error_naming_it_and_is_never_overwritten(tmp_path):
    settings = _settings(tmp_path)
    store = open_token_store(settings)
    alice = store.issue("alice", admin=False)
    store.close()
    path = settings.api_tokens_db_path
    torn = path.read_bytes()[:40]
    path.write_bytes(torn)
    with pytest.raises(BackendUnavailable, match=r"token database .*tokens\.db cannot be used"):
        open_token_store(settings)
    with pytest.raises(BackendUnavailable, match="cannot be used"):
        issue_token(settings, "bob", admin=False)
    assert path.read_bytes() == torn  # left for the operator to restore
    assert alice


def test_a_store_damaged_under_a_running_process_is_seen_by_its_next_call(tmp_path):
    settings = _settings(tmp_path)
    store = open_token_store(settings)
    alice = store.issue("alice", admin=False)
    assert store.authenticate(alice) is not None
    path = settings.api_tokens_db_path
    for stale in (path, path.with_name("tokens.db-wal"), path.with_name("tokens.db-shm")):
        stale.unlink(missing_ok=True)
    path.write_bytes(b"not a database at all, " * 100)  # a wrong file restored in its place
    with pytest.raises(TokenStoreUnavailable, match=r"tokens\.db"):
        store.authenticate(alice)


@pytest.mark.parametrize("label", ["alice\n", "alice\nbob", "weekly", "day", "similarity", "a/b", ""])
def test_user_tokens_need_a_whole_valid_user_id_that_no_route_reserves(tmp_path, label):
    store = open_token_store(_settings(tmp_path))
    with pytest.raises(InvalidInput):
        store.issue(label, admin=False)
    assert store.page(10) == []


def test_a_revoked_token_stops_working_at_once_and_the_list_never_shows_a_token(tmp_path):
    store = open_token_store(_settings(tmp_path))
    alice, ops = store.issue("alice", admin=False), store.issue("ops", admin=True)
    assert store.authenticate(alice) is not None
    listed = store.page(10)
    assert sorted((t.label, t.user_id, t.admin) for t in listed) == [("alice", "alice", False), ("ops", None, True)]
    assert all(t.token_id not in alice and t.token_id not in ops for t in listed)  # an id is not a piece of a token
    [alice_id] = [t.token_id for t in listed if t.label == "alice"]
    revoked = store.revoke(alice_id.upper())
    assert revoked.label == "alice"
    assert store.authenticate(alice) is None and store.authenticate(ops) is not None
    with pytest.raises(InvalidInput, match="no token"):
        store.revoke(alice_id)
    with pytest.raises(InvalidInput, match="at least 6"):
        store.revoke("ab")
    with pytest.raises(InvalidInput, match="not a token id"):
        store.revoke("abcdefg%")


def test_the_list_is_paged_in_token_id_order(tmp_path):
    store = open_token_store(_settings(tmp_path))
    for _ in store.issue_many([f"u{k}" for k in range(25)]):
        pass
    pages, after = [], ""
    while page := store.page(10, after):
        pages.append(page)
        after = page[-1].token_id
    assert [len(p) for p in pages] == [10, 10, 5]
    ids = [t.token_id for p in pages for t in p]
    assert ids == sorted(ids) and len(set(ids)) == 25
    with pytest.raises(InvalidInput, match="not a token id"):
        store.page(10, "xyz")


def test_issuing_many_is_chunked_and_every_token_works(tmp_path):
    store = open_token_store(_settings(tmp_path))
    users = [f"user{k}" for k in range(ISSUE_CHUNK + 3)]
    chunks = list(store.issue_many(users))
    assert [len(c) for c in chunks] == [ISSUE_CHUNK, 3]
    issued = [pair for chunk in chunks for pair in chunk]
    assert [user for user, _ in issued] == users
    for user, token in issued[:: ISSUE_CHUNK // 7] + issued[-2:]:
        principal = store.authenticate(token)
        assert principal is not None and (principal.user_id, principal.admin) == (user, False)


def test_a_provisioning_file_is_checked_whole_naming_each_bad_line():
    assert read_user_ids(["alice", "bob\r", "carol-2"]) == ["alice", "bob", "carol-2"]
    with pytest.raises(InvalidInput) as refused:
        read_user_ids(["alice", "weekly", "", "bad user", "alice", "ok"])
    message = str(refused.value)
    assert "4 bad lines" in message
    for expected in ("line 2: 'weekly' is a reserved name", "line 3:", "line 4:", "line 5: user 'alice' is on line 1"):
        assert expected in message
    assert "line 6" not in message and "line 1:" not in message
    with pytest.raises(InvalidInput, match="no user ids"):
        read_user_ids([])


def _write_legacy(path: Path, tokens: dict[str, tuple[str, str | None, bool]]) -> None:
    import hashlib

    entries = [
        {"sha256": hashlib.sha256(token.encode()).hexdigest(), "label": label, "user_id": user, "admin": admin}
        for token, (label, user, admin) in tokens.items()
    ]
    path.write_text(json.dumps({"tokens": entries}))


LEGACY = {"gw_alice-old": ("alice", "alice", False), "gw_ops-old": ("ops", None, True)}


def test_a_legacy_token_file_is_migrated_once_and_renamed_aside(tmp_path):
    settings = _settings(tmp_path)
    _write_legacy(settings.api_tokens_file, LEGACY)
    store = open_token_store(settings)
    assert store.authenticate("gw_alice-old") == _principal("alice", "alice", False)
    assert store.authenticate("gw_ops-old") == _principal("ops", None, True)
    assert not settings.api_tokens_file.exists()
    assert (tmp_path / "tokens.json.migrated").exists()
    store.revoke(next(t.token_id for t in store.page(10) if t.label == "alice"))
    # the same file again (restored from a backup): the tokens already there are left alone, a revoked one comes back
    _write_legacy(settings.api_tokens_file, LEGACY)
    again = open_token_store(settings)
    assert len(again.page(10)) == 2 and again.authenticate("gw_ops-old") is not None


def _principal(label, user, admin):
    from graywave.service.tokens import Principal

    return Principal(label, user, admin)


def _open_and_check(folder: str, barrier) -> bool:
    barrier.wait()
    store = open_token_store(_settings(Path(folder)))
    return all(store.authenticate(token) is not None for token in LEGACY)


def test_two_processes_migrating_at_once_both_work_and_nothing_is_duplicated(tmp_path):
    many = {f"gw_token-{k}": (f"user{k}", f"user{k}", False) for k in range(2000)}
    _write_legacy(tmp_path / "tokens.json", {**LEGACY, **many})
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager:
        barrier = manager.Barrier(4)
        with context.Pool(4) as pool:
            assert pool.starmap(_open_and_check, [(str(tmp_path), barrier)] * 4) == [True] * 4
    with sqlite3.connect(tmp_path / "tokens.db") as db:
        assert db.execute("SELECT count(*) FROM tokens").fetchone() == (2002,)
    assert sorted(p.name for p in tmp_path.iterdir() if "json" in p.name) == ["tokens.json.migrated"]


def test_a_damaged_legacy_file_is_an_error_naming_it_and_stays(tmp_path):
    settings = _settings(tmp_path)
    settings.api_tokens_file.write_text('{"tokens": [')
    with pytest.raises(TokenStoreUnavailable, match=r"token file .*tokens\.json, to be migrated"):
        open_token_store(settings)
    assert settings.api_tokens_file.read_text() == '{"tokens": ['


def _not_utf8(path: Path) -> None:
    path.write_bytes(b'{"tokens": [{"label": "caf\xe9"}]}')


def _folder(path: Path) -> None:
    path.mkdir()


def _dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")  # endless: read whole, it filled the memory


def _fifo(path: Path) -> None:
    os.mkfifo(path)  # opened for reading, it waited for a writer forever


def _huge(path: Path) -> None:
    with path.open("wb") as out:
        out.truncate(8 * 1024**3)  # 8 GiB, sparse: read whole, it filled the memory


def _deep(path: Path) -> None:
    path.write_text("[" * 100_000 + "]" * 100_000)  # json.loads: RecursionError


def _loop(path: Path) -> None:
    path.symlink_to(path.name)  # a link to itself: ELOOP


def _under_a_file(path: Path) -> None:
    path.parent.rmdir()
    path.parent.write_text("a file where the token file's folder should be")


DAMAGED = {
    "not utf-8": _not_utf8,
    "a folder": _folder,
    "a link to /dev/zero": _dev_zero,
    "a fifo": _fifo,
    "a huge file": _huge,
    "json nested 100,000 deep": _deep,
    "a link to itself": _loop,
    "a file for a folder": _under_a_file,
}
"""Files that cannot be read as a token store: each in place of the SQLite store, or of a legacy
JSON file to migrate."""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", DAMAGED.values(), ids=DAMAGED.keys())
@pytest.mark.parametrize("which", ["database", "legacy file"])
def test_a_store_that_cannot_be_read_as_one_is_refused_quickly_naming_it(tmp_path, damage, which):
    """Each of these was a 500 (UnicodeDecodeError, IsADirectoryError, ...) or froze the reader (a
    FIFO, /dev/zero, a huge file). Now an error naming the file, in well under a second."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    settings = _settings(folder)
    if which == "legacy file":  # the database elsewhere, fine
        settings = Settings(
            api_tokens_file=folder / "tokens.json", api_tokens_db=tmp_path / "tokens.db", mongodb_uri=None
        )
    path = settings.api_tokens_db_path if which == "database" else settings.api_tokens_file
    damage(path)
    started = time.monotonic()
    for _ in range(2):
        with pytest.raises(TokenStoreUnavailable, match=rf"token (database|file) .*{path.name}"):
            open_token_store(settings)
    with pytest.raises(TokenStoreUnavailable, match=rf"token (database|file) .*{path.name}"):
        issue_token(settings, "bob", admin=False)  # never overwritten
    assert time.monotonic() - started < 5
    assert issubclass(TokenStoreUnavailable, BackendUnavailable)


def test_a_token_database_reached_through_a_link_works(tmp_path):
    """Kubernetes mounts volumes through links: a link is followed, only its target's kind counts."""
    real = tmp_path / "real"
    real.mkdir()
    token = issue_token(_settings(real), "alice", admin=False)
    (tmp_path / "tokens.db").symlink_to(real / "tokens.db")
    assert open_token_store(_settings(tmp_path)).authenticate(token) is not None
