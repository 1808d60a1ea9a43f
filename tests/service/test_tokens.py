"""API tokens: concurrent issuing loses nothing, a damaged file is an error that says so."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from graywave.errors import BackendUnavailable, InvalidInput
from graywave.service.tokens import TokenStore, TokenStoreUnavailable, issue_token, list_tokens, revoke_token

WRITERS, EACH = 6, 5


def _issue_many(path: str, writer: int, barrier) -> list[str]:
    barrier.wait()  # every writer starts at once
    return [issue_token(Path(path), f"user{writer}-{k}", admin=False) for k in range(EACH)]


def test_concurrent_issuing_loses_no_token_and_never_tears_the_file(tmp_path):
    path = tmp_path / "tokens.json"
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager:
        barrier = manager.Barrier(WRITERS)
        with context.Pool(WRITERS) as pool:
            issued = pool.starmap(_issue_many, [(str(path), w, barrier) for w in range(WRITERS)])
    tokens = [token for batch in issued for token in batch]
    assert len(json.loads(path.read_text())["tokens"]) == WRITERS * EACH
    store = TokenStore(path)
    assert all(store.authenticate(token) is not None for token in tokens)  # every one of them works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.json", "tokens.json.lock"]  # no temp file left


def test_a_damaged_token_file_is_an_error_naming_it_and_is_never_overwritten(tmp_path):
    path = tmp_path / "tokens.json"
    issue_token(path, "alice", admin=False)
    torn = path.read_text()[:40]
    path.write_text(torn)
    with pytest.raises(BackendUnavailable, match=r"token file .*tokens\.json is not valid"):
        TokenStore(path).authenticate("gw_anything")
    with pytest.raises(BackendUnavailable, match="not valid"):
        issue_token(path, "bob", admin=False)
    assert path.read_text() == torn  # left for the operator to restore
    path.write_text(json.dumps({"tokens": [{"label": "x"}]}))
    with pytest.raises(BackendUnavailable, match="KeyError"):
        TokenStore(path).authenticate("gw_anything")
    path.write_text(json.dumps({"tokens": [{"sha256": "00", "admin": False}]}))  # no label
    with pytest.raises(BackendUnavailable, match="KeyError"):
        TokenStore(path).authenticate("gw_anything")


@pytest.mark.parametrize("label", ["alice\n", "alice\nbob", "weekly", "day", "similarity", "a/b", ""])
def test_user_tokens_need_a_whole_valid_user_id_that_no_route_reserves(tmp_path, label):
    with pytest.raises(InvalidInput):
        issue_token(tmp_path / "tokens.json", label, admin=False)
    assert not (tmp_path / "tokens.json").exists()


def test_a_revoked_token_stops_working_at_once_and_the_list_never_shows_a_token(tmp_path):
    path = tmp_path / "tokens.json"
    alice, ops = issue_token(path, "alice", admin=False), issue_token(path, "ops", admin=True)
    store = TokenStore(path)
    assert store.authenticate(alice) is not None
    listed = list_tokens(path)
    assert [(t.label, t.user_id, t.admin) for t in listed] == [("alice", "alice", False), ("ops", None, True)]
    assert all(t.token_id not in alice and t.token_id not in ops for t in listed)  # an id is not a piece of a token
    revoked = revoke_token(path, listed[0].token_id)
    assert revoked.label == "alice"
    assert store.authenticate(alice) is None and store.authenticate(ops) is not None
    with pytest.raises(InvalidInput, match="no token"):
        revoke_token(path, listed[0].token_id)
    with pytest.raises(InvalidInput, match="at least 6"):
        revoke_token(path, "ab")


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


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_token_file_that_cannot_be_read_as_one_is_refused_quickly_naming_it(tmp_path, damage):
    """Each of these was a 500 (UnicodeDecodeError, IsADirectoryError, ...) or froze the reader (a
    FIFO, /dev/zero, a huge file). The read is bounded: an error naming the file, in well under a second."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    path = folder / "tokens.json"
    damage(path)
    started = time.monotonic()
    with pytest.raises(TokenStoreUnavailable, match=r"token file .*tokens\.json"):
        TokenStore(path).authenticate("gw_anything")
    with pytest.raises(TokenStoreUnavailable, match=r"token file .*tokens\.json"):
        list_tokens(path)
    with pytest.raises(TokenStoreUnavailable, match=r"token file .*tokens\.json"):
        issue_token(path, "bob", admin=False)  # never overwritten
    assert time.monotonic() - started < 5
    assert issubclass(TokenStoreUnavailable, BackendUnavailable)


def test_a_token_file_reached_through_a_link_works(tmp_path):
    """Kubernetes mounts its secrets as links to regular files: a link is followed, only its target's kind counts."""
    real = tmp_path / "real.json"
    token = issue_token(real, "alice", admin=False)
    (tmp_path / "tokens.json").symlink_to(real)
    assert TokenStore(tmp_path / "tokens.json").authenticate(token) is not None
