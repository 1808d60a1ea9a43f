"""API tokens: concurrent issuing loses nothing, a damaged file is an error that says so."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from graywave.errors import BackendUnavailable, InvalidInput
from graywave.service.tokens import TokenStore, issue_token, list_tokens, revoke_token

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
