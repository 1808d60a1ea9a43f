"""Direct uploads from the phone to S3 (the design document's part 3), without passing through graywave.

    post = presign_upload(store, date.today(), "alice", "image/heic", max_bytes=50_000_000, expires_s=300)
    # the phone sends: POST post.url, multipart form = post.fields + file=<the photo>

The signed policy pins the key (``uploads/<day>/<user_id>/<new id>.<ext>``), the content type,
a size range of 1..max_bytes and a short expiry: the holder can put one image under its own prefix
and nothing else (no read, no list, no other key).
"""

from __future__ import annotations

import uuid
from datetime import date

from graywave.errors import InvalidInput, UnsupportedMediaType
from graywave.storage.blobs import BlobStore
from graywave.storage.layout import USER_ID_PATTERN, upload_key
from graywave.storage.s3 import PresignedPost, S3BlobStore

UPLOAD_CONTENT_TYPES = {
    "image/jpeg": "jpg",
    "image/heic": "heic",
    "image/heif": "heif",
    "image/png": "png",
    "image/webp": "webp",
    "image/avif": "avif",
}


def presign_upload(
    store: BlobStore, day: date, user_id: str, content_type: str, max_bytes: int, expires_s: int
) -> PresignedPost:
    if not isinstance(store, S3BlobStore):
        raise InvalidInput("direct uploads need an S3 blob store (GRAYWAVE_BLOB_URL=s3://...)")
    if not USER_ID_PATTERN.fullmatch(user_id):
        raise InvalidInput(f"user id {user_id!r} does not match [A-Za-z0-9_-]{{1,64}}")
    extension = UPLOAD_CONTENT_TYPES.get(content_type)
    if extension is None:
        raise UnsupportedMediaType(f"content type {content_type!r} is not one of {', '.join(UPLOAD_CONTENT_TYPES)}")
    key = upload_key(day, user_id, f"{uuid.uuid4().hex}.{extension}")
    return store.presigned_post(key, content_type, max_bytes, expires_s)
