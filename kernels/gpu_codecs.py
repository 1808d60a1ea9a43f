"""JPEG decode to luma and grayscale JPEG encode on the GPU, a batch at a time, with nvImageCodec.

Planes come back as CuPy arrays (zero-copy through ``__cuda_array_interface__``); only encoded bytes
return to the host. An image nvImageCodec cannot handle is ``None`` in the result: the caller falls
back to the CPU codecs (``codecs.decode_luma``, ``codecs.encode_luma_jpeg``) for it.

Status: written without a GPU at hand; not yet run on one (see docs/benchmarks.md).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)


def nvimgcodec_available() -> bool:
    return importlib.util.find_spec("nvidia.nvimgcodec") is not None


class NvImageCodecLuma:
    """The ``LumaBatchCodec`` of the GPU path (see ``service.batch``)."""

    def __init__(self) -> None:
        import cupy
        from nvidia import nvimgcodec

        self._cp = cupy
        self._nv = nvimgcodec
        self._decoder = nvimgcodec.Decoder()
        self._encoder = nvimgcodec.Encoder()
        # GRAY straight from the JPEG: the Y plane, no colour conversion. The EXIF orientation is
        # applied by graywave (like on the CPU), so that histograms never depend on it.
        self._decode_params = nvimgcodec.DecodeParams(
            color_spec=nvimgcodec.ColorSpec.GRAY, apply_exif_orientation=False
        )

    def decode(self, datas: Sequence[bytes]) -> list[Any | None]:
        try:
            images = self._decoder.decode(list(datas), self._decode_params)
        except Exception:  # the whole batch falls back to the CPU
            logger.exception("nvImageCodec could not decode a batch; decoding it on the CPU")
            return [None] * len(datas)
        planes: list[Any | None] = []
        for image in images:
            if image is None:
                planes.append(None)
                continue
            plane = self._cp.asarray(image)
            planes.append(plane.reshape(plane.shape[:2]) if plane.ndim == 3 else plane)
        return planes

    def encode(self, planes: Sequence[Any], quality: int) -> list[bytes | None]:
        try:
            params = self._nv.EncodeParams(
                quality=quality,
                color_spec=self._nv.ColorSpec.GRAY,
                chroma_subsampling=self._nv.ChromaSubsampling.CSS_GRAY,
            )
            images = [self._nv.as_image(self._cp.ascontiguousarray(plane)[..., None]) for plane in planes]
            encoded = self._encoder.encode(images, "jpeg", params)
        except Exception:  # the whole batch is encoded on the CPU
            logger.exception("nvImageCodec could not encode a batch; encoding it on the CPU")
            return [None] * len(planes)
        return [bytes(item) if item is not None else None for item in encoded]
