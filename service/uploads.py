"""What the API accepts as an upload, as the storage defines it (``storage.uploads``), given to the
API by the service: the content types an upload may declare."""

from __future__ import annotations

from graywave.storage.uploads import UPLOAD_CONTENT_TYPES

__all__ = ["UPLOAD_CONTENT_TYPES"]
