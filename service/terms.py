"""The storage's terms that the API and the command line check their input against, given to them by
the service (they import the service, never ``graywave.storage``): what a user id and an upload's
key are (``storage.layout``, the one place that defines them), and which storage errors are a
refusal to write. Light on purpose: the command line imports this at start-up, so nothing heavier
than ``storage.layout`` is imported here before it is needed.
"""

from __future__ import annotations

from graywave.storage.layout import USER_ID_PATTERN, UploadKey, parse_upload_key, upload_key, user_id_problem

__all__ = ["USER_ID_PATTERN", "UploadKey", "parse_upload_key", "refusal", "upload_key", "user_id_problem"]


def refusal(error: BaseException) -> str | None:
    """Why the storage refused a write (a read-only file system, no permission, a full disk), or None
    when ``error`` is no such refusal (``storage.blobs.refusal``, imported when an error is read)."""
    from graywave.storage.blobs import refusal as storage_refusal

    return storage_refusal(error)
