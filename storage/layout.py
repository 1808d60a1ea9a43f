"""The blob store's key layout: where uploads are found and where processed images go.

uploads/YYYY-MM-DD/<user_id>/<file name>          written by phones (date in GRAYWAVE_TIMEZONE)
processed/YYYY-MM-DD/<user_id>/<image_id>.jpg     written by graywave, same date and user
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date

from graywave.errors import BadKey
from graywave.records import image_id_for

USER_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""Matched whole (``fullmatch``): ``$`` alone would let a trailing newline through."""
RESERVED_USER_IDS = frozenset({"weekly", "day", "similarity"})
"""Segments of the design's routes (``/images/weekly/{user}``, ``/images/day/median``,
``/images/similarity/{user}/{n}``) that a user of that name would be shadowed by: never issued."""
UPLOADS = "uploads"
PROCESSED = "processed"
DELETIONS = "deletions"
"""Deletes in progress (``deletions/<id>.json``): written before a delete removes anything, removed last."""
PROCESSED_EXTENSION = "jpg"
PROCESSED_CONTENT_TYPE = "image/jpeg"


@dataclass(frozen=True)
class UploadKey:
    key: str
    upload_date: date
    user_id: str
    file_name: str

    @property
    def image_id(self) -> str:
        return image_id_for(self.key)

    @property
    def processed_key(self) -> str:
        return processed_key(self.upload_date, self.user_id, self.image_id)


def user_id_problem(user_id: str) -> str | None:
    """Why ``user_id`` cannot be a user's id (the pattern, or a reserved name), or None if it can."""
    if not USER_ID_PATTERN.fullmatch(user_id):
        return f"user id {user_id!r} does not match [A-Za-z0-9_-]{{1,64}}"
    if user_id in RESERVED_USER_IDS:
        return f"{user_id!r} is a reserved name of the API's routes and cannot be a user id"
    return None


MAX_FILE_NAME_BYTES = 200


def safe_file_name(name: str | None) -> str | None:
    """An uploaded file's name fit to be a key's last segment: its base name (no folders, whichever
    separator), without control or format characters, trimmed to ``MAX_FILE_NAME_BYTES`` of UTF-8
    (the extension kept); None when nothing usable is left.

    >>> safe_file_name("C:\\Users\\ann\\IMG_0001.HEIC")
    'IMG_0001.HEIC'
    >>> safe_file_name("../../etc/pass\x00wd\n.jpg")
    'passwd.jpg'
    """
    if not name:
        return None
    base = re.split(r"[/\\]", name)[-1]
    cleaned = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip()
    if cleaned in ("", ".", ".."):
        return None
    stem, dot, extension = cleaned.rpartition(".")
    if not dot or len(extension.encode()) > 16:
        stem, dot, extension = cleaned, "", ""
    room = MAX_FILE_NAME_BYTES - len((dot + extension).encode())
    stem = stem.encode()[:room].decode(errors="ignore")
    return (stem + dot + extension) or None


def uploads_prefix(day: date) -> str:
    return f"{UPLOADS}/{day.isoformat()}/"


def upload_key(day: date, user_id: str, file_name: str) -> str:
    key = f"{uploads_prefix(day)}{user_id}/{file_name}"
    parse_upload_key(key)
    return key


def parse_upload_key(key: str) -> UploadKey:
    """Split ``uploads/<date>/<user_id>/<file name>``; raise ``BadKey`` saying what is wrong."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != UPLOADS:
        raise BadKey(f"{key!r} is not uploads/YYYY-MM-DD/<user_id>/<file name>")
    _, day, user_id, file_name = parts
    try:
        upload_date = date.fromisoformat(day)
    except ValueError:
        raise BadKey(f"{day!r} in {key!r} is not a YYYY-MM-DD date") from None
    problem = user_id_problem(user_id)
    if problem:
        raise BadKey(f"{problem} (in {key!r})")
    if not file_name:
        raise BadKey(f"{key!r} has an empty file name")
    return UploadKey(key=key, upload_date=upload_date, user_id=user_id, file_name=file_name)


def processed_key(upload_date: date, user_id: str, image_id: str) -> str:
    return f"{PROCESSED}/{upload_date.isoformat()}/{user_id}/{image_id}.{PROCESSED_EXTENSION}"
