"""Every error graywave raises on purpose: one base class, ``GraywaveError``, and a few kinds.

The kinds say what the caller can do about it, and each front end maps them once: the API's
exception handlers turn them into JSON errors (``api.errors``), the CLI into a message and exit
code 1. Anything else that escapes is a bug, and shows its traceback.

    InvalidInput      a value the caller gave is malformed (user id, key, week, metric)   -> 400
    UnsupportedMediaType  a content type graywave does not accept                         -> 415
    NotFound          what was asked for does not exist (image, blob, a day's data)      -> 404
    Rejected          an upload that cannot become a processed image, with a reason code -> 413/415/400
    BackendUnavailable a store stayed unreachable longer than graywave waits              -> 503
    DeviceUnavailable GRAYWAVE_DEVICE=gpu on a machine without a usable GPU
    CodecFailed       a batch codec (nvImageCodec) failed a whole call; its images go to the CPU

Each also derives from the built-in exception of its meaning (``ValueError``, ``LookupError``,
``KeyError``, ``RuntimeError``), so that plain Python code that catches those keeps working.
"""

from __future__ import annotations

from enum import StrEnum


class GraywaveError(Exception):
    """The base class of every error graywave raises on purpose."""


class InvalidInput(GraywaveError, ValueError):
    """A value the caller gave is malformed."""


class UnsupportedMediaType(InvalidInput):
    """A content type graywave does not accept."""


class BadKey(InvalidInput):
    """A key under ``uploads/`` that does not follow the layout."""


class NotFound(GraywaveError, LookupError):
    """What was asked for does not exist."""


class BlobExists(GraywaveError):
    """A blob was to be created at a key that already holds one (``write(..., overwrite=False)``)."""


class BlobNotFound(NotFound, KeyError):
    """The key does not exist (or no longer exists) in the blob store."""

    def __str__(self) -> str:  # KeyError would print the repr of the key
        return f"no blob at {self.args[0]}" if self.args else "no such blob"


class NoData(NotFound):
    """The lake has nothing to answer the question with (no images that day, an unknown user)."""


class BackendUnavailable(GraywaveError, RuntimeError):
    """A backend stayed unreachable for longer than graywave is willing to wait."""


class DeviceUnavailable(GraywaveError, RuntimeError):
    """The configured device (a GPU) cannot be used on this machine."""


class CodecFailed(GraywaveError, RuntimeError):
    """A batch codec (nvImageCodec) failed a whole call at run time: its images are done on the CPU
    codecs, and counted as fallbacks."""


class RejectReason(StrEnum):
    """Stable short codes for uploads that cannot be processed."""

    EMPTY = "empty"
    NOT_AN_IMAGE = "not_an_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    TOO_MANY_PIXELS = "too_many_pixels"
    OVER_DECODE_BUDGET = "over_decode_budget"
    """Decoding would need more memory than ``GRAYWAVE_MAX_DECODE_BYTES`` (it depends on the mode)."""
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"
    BAD_KEY = "bad_key"
    VANISHED = "vanished"
    NOT_A_FILE = "not_a_file"
    """A symbolic link, a FIFO, a device, a socket: the blob store reads regular files only."""
    TOO_LARGE = "too_large"
    """More bytes than ``GRAYWAVE_MAX_UPLOAD_BYTES``: never read whole."""


class Rejected(GraywaveError, ValueError):
    """An upload that cannot become a processed image, with a reason code and a human detail."""

    def __init__(self, reason: RejectReason, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
