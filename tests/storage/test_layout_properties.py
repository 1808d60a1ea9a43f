"""Upload keys for any user id and file name Hypothesis draws: they round-trip, and only whole valid user
ids that no route reserves make keys. A local store takes every key of plain segments at its path, and
refuses every key that could leave its folder."""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from graywave.errors import BadKey, InvalidInput
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.layout import RESERVED_USER_IDS, parse_upload_key, upload_key, uploads_prefix
from tests.helpers import DAY

BOUNDED = settings(max_examples=80, deadline=None)
USER_IDS_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
USER_IDS = st.from_regex(USER_IDS_RE, fullmatch=True).filter(lambda user_id: user_id not in RESERVED_USER_IDS)
FILE_NAMES = st.text(st.characters(exclude_characters="/\x00", codec="utf-8"), min_size=1, max_size=80)
DAYS = st.dates(date(2000, 1, 1), date(2100, 12, 31))
RESERVED = st.sampled_from(sorted(RESERVED_USER_IDS))
SEGMENTS = st.text(st.characters(exclude_characters="/\x00", codec="utf-8"), min_size=1, max_size=40).filter(
    lambda segment: segment not in (".", "..")
)  # 40 characters: at most 160 bytes, within a file system's 255 for a name
KEYS = st.lists(SEGMENTS, min_size=1, max_size=4).map("/".join)
"""Keys a local store takes: one or more segments, none empty, ``.`` or ``..``, in UTF-8."""
ESCAPING_KEYS = st.one_of(
    st.tuples(st.lists(SEGMENTS, max_size=3), st.sampled_from(["", ".", ".."]), st.lists(SEGMENTS, max_size=3)).map(
        lambda parts: "/".join([*parts[0], parts[1], *parts[2]])
    ),
    KEYS.map(lambda key: "/" + key),
)
"""Keys a local store refuses: one segment empty, ``.`` or ``..`` (or none at all), or a leading ``/``."""


@BOUNDED
@given(day=DAYS, user_id=USER_IDS, file_name=FILE_NAMES)
def test_upload_keys_round_trip(day, user_id, file_name):
    key = upload_key(day, user_id, file_name)
    parsed = parse_upload_key(key)
    assert (parsed.upload_date, parsed.user_id, parsed.file_name) == (day, user_id, file_name)
    assert key.startswith(uploads_prefix(day) + user_id + "/")


def whole_valid(user_id: str) -> bool:
    return USER_IDS_RE.fullmatch(user_id) is not None and user_id not in RESERVED_USER_IDS


@BOUNDED
@given(user_id=USER_IDS)
def test_every_whole_valid_user_id_makes_a_key_of_its_own(user_id):
    key = upload_key(DAY, user_id, "a.jpg")
    assert key == f"uploads/2026-11-25/{user_id}/a.jpg"
    assert parse_upload_key(key).user_id == user_id


@BOUNDED
@given(user_id=st.one_of(st.text(max_size=70).filter(lambda user_id: not whole_valid(user_id)), RESERVED))
@example("alice\n")  # "$" alone once let a trailing newline through
@example("weekly")  # a name of the API's routes: its owner could never be served
@example("")
@example("a" * 65)
def test_any_other_user_id_is_refused(user_id):
    with pytest.raises(BadKey):
        upload_key(DAY, user_id, "a.jpg")


@BOUNDED
@given(key=KEYS)
def test_a_key_of_plain_segments_is_stored_at_its_path_in_the_store(tmp_path_factory, key):
    root = tmp_path_factory.mktemp("store")
    store = LocalBlobStore(root)
    store.write(key, b"stored", "application/octet-stream")
    path = root.joinpath(*key.split("/"))
    assert path.read_bytes() == b"stored" == store.read(key)
    assert path.resolve().is_relative_to(root.resolve())


@BOUNDED
@example("../../etc/passwd")
@example("a/../../b")
@example("/etc/passwd")
@example("")
@given(key=ESCAPING_KEYS)
def test_a_key_with_an_empty_dot_or_dot_dot_segment_or_a_leading_slash_is_refused(tmp_path_factory, key):
    root = tmp_path_factory.mktemp("store")
    store = LocalBlobStore(root)
    with pytest.raises(InvalidInput):
        store.write(key, b"escaped", "application/octet-stream")
    with pytest.raises(InvalidInput):
        store.read(key)
    assert list(root.rglob("*")) == []


@BOUNDED
@example("../../etc/passwd")
@example("a/./b")
@example("uploads/2026-11-25/ann/\ud800.jpg")
@given(key=st.text(st.characters(exclude_characters="\x00"), max_size=60))
def test_any_key_is_refused_or_has_its_path_inside_the_store(tmp_path_factory, key):
    root = tmp_path_factory.mktemp("store")
    parts = key.split("/")
    plain = bool(key) and all(part not in ("", ".", "..") for part in parts) and not _has_surrogate(key)
    if plain:
        path = LocalBlobStore(root)._path(key)
        assert path == root.joinpath(*parts) and path.resolve().is_relative_to(root.resolve())
    else:
        with pytest.raises(InvalidInput):
            LocalBlobStore(root)._path(key)


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def test_a_key_with_a_lone_surrogate_is_refused_not_a_crash(tmp_path):
    """Hypothesis found it: such a key (no file name can be it) failed deep in the path code."""
    with pytest.raises(InvalidInput):
        LocalBlobStore(tmp_path)._path("uploads/2026-11-25/ann/\ud800.jpg")
