"""Upload keys for any user id and file name Hypothesis draws: they round-trip, none escapes, and only
whole valid user ids that no route reserves make keys."""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from graywave.errors import BadKey, InvalidInput
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.layout import RESERVED_USER_IDS, parse_upload_key, upload_key, uploads_prefix

BOUNDED = settings(max_examples=80, deadline=None)
USER_IDS_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
USER_IDS = st.from_regex(USER_IDS_RE, fullmatch=True).filter(lambda user_id: user_id not in RESERVED_USER_IDS)
FILE_NAMES = st.text(st.characters(exclude_characters="/\x00", codec="utf-8"), min_size=1, max_size=80)
DAYS = st.dates(date(2000, 1, 1), date(2100, 12, 31))


@BOUNDED
@given(day=DAYS, user_id=USER_IDS, file_name=FILE_NAMES)
def test_upload_keys_round_trip(day, user_id, file_name):
    key = upload_key(day, user_id, file_name)
    parsed = parse_upload_key(key)
    assert (parsed.upload_date, parsed.user_id, parsed.file_name) == (day, user_id, file_name)
    assert key.startswith(uploads_prefix(day) + user_id + "/")


@BOUNDED
@given(user_id=st.text(max_size=70))
@example("alice\n")  # "$" alone once let a trailing newline through
@example("weekly")  # a name of the API's routes: its owner could never be served
def test_only_whole_valid_user_ids_make_keys(user_id):
    valid = USER_IDS_RE.fullmatch(user_id) is not None and user_id not in RESERVED_USER_IDS
    if valid:
        upload_key(date(2026, 11, 25), user_id, "a.jpg")
    else:
        with pytest.raises(BadKey):
            upload_key(date(2026, 11, 25), user_id, "a.jpg")


@BOUNDED
@example("../../etc/passwd")
@example("a/../../b")
@given(key=st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=60))
def test_no_key_reaches_outside_a_local_store(tmp_path_factory, key):
    root = tmp_path_factory.mktemp("store")
    store = LocalBlobStore(root)
    try:
        path = store._path(key)
    except InvalidInput:
        return
    assert path.resolve().is_relative_to(root.resolve())


def test_a_key_with_a_lone_surrogate_is_refused_not_a_crash(tmp_path):
    """Hypothesis found it: such a key (no file name can be it) failed deep in the path code."""
    with pytest.raises(InvalidInput):
        LocalBlobStore(tmp_path)._path("uploads/2026-11-25/ann/\ud800.jpg")
