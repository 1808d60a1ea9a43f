from datetime import date

import pytest

from graywave.errors import BadKey
from graywave.records import image_id_for
from graywave.storage.layout import parse_upload_key, processed_key, upload_key


def test_upload_key_round_trip_and_processed_key():
    key = upload_key(date(2026, 11, 25), "user_01-A", "IMG 0001.HEIC")
    assert key == "uploads/2026-11-25/user_01-A/IMG 0001.HEIC"
    parsed = parse_upload_key(key)
    assert (parsed.upload_date, parsed.user_id, parsed.file_name) == (date(2026, 11, 25), "user_01-A", "IMG 0001.HEIC")
    assert parsed.processed_key == f"processed/2026-11-25/user_01-A/{parsed.image_id}.jpg"
    assert processed_key(date(2026, 1, 2), "u", "abc") == "processed/2026-01-02/u/abc.jpg"


def test_image_id_is_stable_and_distinct():
    a = image_id_for("uploads/2026-11-25/u/a.jpg")
    assert a == image_id_for("uploads/2026-11-25/u/a.jpg")
    assert a != image_id_for("uploads/2026-11-25/u/b.jpg")
    assert len(a) == 20 and int(a, 16) >= 0


@pytest.mark.parametrize(
    "key",
    [
        "uploads/2026-11-25/u/sub/a.jpg",  # nested
        "uploads/2026-11-25/u/",  # no file name
        "uploads/2026-13-01/u/a.jpg",  # not a date
        "uploads/2026-11-25/bad.user/a.jpg",
        "uploads/2026-11-25/" + "x" * 65 + "/a.jpg",
        "processed/2026-11-25/u/a.jpg",
        "uploads/a.jpg",
    ],
)
def test_keys_off_the_layout_are_refused(key):
    with pytest.raises(BadKey):
        parse_upload_key(key)


def test_longest_user_id_is_accepted():
    assert parse_upload_key("uploads/2026-11-25/" + "x" * 64 + "/a.jpg").user_id == "x" * 64
