"""JPEG decode to luma and grayscale JPEG encode, a batch at a time, with nvImageCodec (0.9).

``NvImageCodecLuma(device)`` runs on the GPU (nvJPEG: planes come back as CuPy arrays, zero-copy
through ``__cuda_array_interface__``, and only encoded bytes return to the host), or, for a
``cpu`` device, on nvImageCodec's CPU backend (libjpeg-turbo) with NumPy planes: the same calls,
the same batching and the same ``None`` in place of an image it could not handle, which is how
CI runs this code without a GPU.

It is the GPU twin of ``codecs.CpuLumaCodec`` (the ``codecs.LumaBatchCodec`` interface; see
``codecs.luma_batch_codec``). An image the codec cannot decode or encode is ``None`` in its place in
the result, and the caller (``service.batch.process_uploads``) does that one on the CPU codecs and
counts it as a fallback. A failure of the whole call raises ``CodecFailed`` with nvImageCodec's message. A wrong
call (arguments nvImageCodec does not take) raises ``TypeError`` and is never caught: it is a bug,
and the tests, which run the real calls, fail on it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import numpy as np

from graywave.errors import CodecFailed, Rejected
from graywave.kernels.codecs import PlainJpegBatchCodec, checked_jpeg
from graywave.kernels.device import Device


def nvimgcodec_available() -> bool:
    return importlib.util.find_spec("nvidia.nvimgcodec") is not None


class NvImageCodecLuma(PlainJpegBatchCodec):
    """The ``LumaBatchCodec`` of a GPU (see ``codecs.luma_batch_codec``), on ``device``: the plain JPEGs
    of a whole batch in one call (``PlainJpegBatchCodec.decode_images``)."""

    def __init__(self, device: Device) -> None:
        from nvidia import nvimgcodec

        self.device = device
        self._nv = nvimgcodec
        try:
            if device.name == "gpu":
                # GPU backends only: by default nvImageCodec would also decode or encode on its own CPU
                # backend, silently; what the GPU cannot do must come back as None, to be counted.
                gpu_only = [
                    nvimgcodec.Backend(kind)
                    for kind in (
                        nvimgcodec.BackendKind.HW_GPU_ONLY,  # the hardware JPEG decoder (A100, H100)
                        nvimgcodec.BackendKind.GPU_ONLY,
                        nvimgcodec.BackendKind.HYBRID_CPU_GPU,  # nvJPEG's Huffman on the CPU, the rest on the GPU
                    )
                ]
                self._decoder = nvimgcodec.Decoder(backends=gpu_only)
                self._encoder = nvimgcodec.Encoder(backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.GPU_ONLY)])
            else:  # both arguments are needed: without the backend, it still looks for a GPU
                cpu_only = [nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)]
                self._decoder = nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY, backends=cpu_only)
                self._encoder = nvimgcodec.Encoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY, backends=cpu_only)
        except RuntimeError as error:  # no CUDA device or driver
            raise CodecFailed(f"nvImageCodec cannot start on the {device.name}: {error}") from error
        # GRAY straight from the JPEG: the Y plane, no colour conversion. The EXIF orientation is
        # applied by graywave (like on the CPU), so that histograms never depend on it.
        self._decode_params = nvimgcodec.DecodeParams(
            color_spec=nvimgcodec.ColorSpec.GRAY, apply_exif_orientation=False
        )

    @property
    def name(self) -> str:
        return f"nvImageCodec ({'nvJPEG' if self.device.name == 'gpu' else 'CPU backend'})"

    def encode_params(self, quality: int) -> Any:
        nv = self._nv
        return nv.EncodeParams(
            quality_type=nv.QualityType.QUALITY,
            quality_value=float(quality),
            color_spec=nv.ColorSpec.GRAY,
            chroma_subsampling=nv.ChromaSubsampling.CSS_GRAY,
        )

    def _plane(self, image: Any) -> Any | None:
        """A decoded image as a (h, w) plane on ``device``; ``None`` for a host image on a GPU device
        (decoded on a CPU, which the caller must count as such)."""
        on_device = image.buffer_kind == self._nv.ImageBufferKind.STRIDED_DEVICE
        if self.device.name == "gpu" and not on_device:
            return None
        if on_device:
            import cupy

            plane = cupy.asarray(image)
        else:
            plane = np.asarray(image)
        return plane.reshape(plane.shape[:2]) if plane.ndim == 3 else plane

    def decode(self, datas: Sequence[bytes]) -> list[Any | None]:
        """The Y plane of each JPEG, or ``None`` where nvImageCodec could not decode it.

        Each JPEG's structure is checked first, as ``decode_luma`` checks it (``codecs.checked_jpeg``: a
        regular-expression pass over its bytes on the CPU, no pixel decoded there): one that ends early or
        whose restart markers are out of order is ``None`` without being decoded (the CPU codecs then reject
        it, with the reason a CPU wave gives: not a fallback), and nvImageCodec decodes the others without
        the stray bytes between their segments, which libjpeg skips and nvImageCodec's parser refuses.
        Not checked here: damage that only an entropy decode shows (a bad Huffman code, a data segment cut
        short by a marker), which the CPU path rejects as ``corrupt`` when libjpeg-turbo reports it, and
        nvJPEG decodes to whatever pixels the damaged data gives (docs/data.md, "Damaged photos").
        """
        streams: list[bytes | None] = []
        for data in datas:
            try:
                streams.append(checked_jpeg(data))
            except Rejected:
                streams.append(None)
        sound = [stream for stream in streams if stream is not None]
        try:
            images = iter(self._decoder.decode(sound, params=self._decode_params) if sound else [])
        except RuntimeError as error:
            raise CodecFailed(f"nvImageCodec could not decode the batch: {error}") from error
        planes = []
        for stream in streams:
            image = None if stream is None else next(images)
            planes.append(None if image is None else self._plane(image))
        return planes

    def encode(self, planes: Sequence[Any], quality: int) -> list[bytes | None]:
        """Each plane as a grayscale JPEG, or ``None`` where nvImageCodec could not encode it."""
        xp = self.device.xp
        params = self.encode_params(quality)
        try:
            images = [self._nv.as_image(xp.ascontiguousarray(plane)[..., None]) for plane in planes]
            encoded = self._encoder.encode(images, "jpeg", params=params)
        except RuntimeError as error:
            raise CodecFailed(f"nvImageCodec could not encode the batch: {error}") from error
        return [None if stream is None else bytes(stream) for stream in encoded]
