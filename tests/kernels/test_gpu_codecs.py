"""nvImageCodec's real calls, on its CPU backend: the codec of the GPU path, executed without a GPU.

The same ``NvImageCodecLuma`` class, the same nvImageCodec calls (batched decode to GRAY, batched
GRAY encode, ``None`` in place), with ``Device("cpu")``. What only a GPU can show: nvJPEG's own
decode (its parity with libjpeg-turbo is ``tests/kernels/test_gpu.py``'s, on a device).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from graywave.kernels import Device
from graywave.kernels.codecs import decode_luma, encode_luma_jpeg
from graywave.kernels.gpu_codecs import NvImageCodecLuma
from graywave.service.samples import encode
from tests.helpers import sample_photo

JPEGS = {
    "baseline 4:2:0": {"quality": 90},
    "progressive": {"quality": 85, "progressive": True},
    "4:4:4": {"quality": 95, "subsampling": 0},
    "4:2:2": {"quality": 80, "subsampling": 1},
}


@pytest.fixture(scope="module")
def codec() -> NvImageCodecLuma:
    return NvImageCodecLuma(Device("cpu"))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return sample_photo(1601, 1203, seed=11)  # odd sizes: partial MCUs at the right and bottom edges


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def test_a_batch_of_jpegs_decodes_to_the_y_plane_bit_for_bit(codec, photo):
    datas = [encode(photo, "JPEG", **options) for options in JPEGS.values()]
    planes = codec.decode(datas)
    assert len(planes) == len(datas)
    for name, data, plane in zip(JPEGS, datas, planes, strict=True):
        assert isinstance(plane, np.ndarray) and plane.dtype == np.uint8, name
        assert np.array_equal(plane, decode_luma(data, 10**9).plane), name  # graywave's CPU decode: libjpeg-turbo's Y


def test_what_it_cannot_decode_is_none_in_its_own_place(codec, photo):
    good = encode(photo[:64, :80], "JPEG", quality=90)
    batch = [good, b"not an image", good[: len(good) // 3], b"", good]
    planes = codec.decode(batch)
    assert [plane is None for plane in planes] == [False, True, True, True, False]
    assert np.array_equal(planes[0], planes[4])


def test_planes_encode_to_grayscale_jpegs_like_the_cpu_encoder(codec, photo):
    plane = decode_luma(encode(photo, "JPEG", quality=92), 10**9).plane
    tiny = np.full((1, 1), 200, np.uint8)
    strided = plane[::2, ::3]  # not contiguous: the codec makes it so
    encoded = codec.encode([plane, tiny, strided], 90)
    for data, source in zip(encoded, [plane, tiny, strided], strict=True):
        assert data is not None
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.mode, image.size) == ("JPEG", "L", (source.shape[1], source.shape[0]))
    # The same quantisation as graywave's CPU encoder (libjpeg-turbo at the same quality), so the
    # same fidelity: within 0.5 dB of it.
    ours, cpu = np.asarray(Image.open(io.BytesIO(encoded[0]))), decode_luma(encode_luma_jpeg(plane, 90), 10**9).plane
    tables = [Image.open(io.BytesIO(data)).quantization for data in (encoded[0], encode_luma_jpeg(plane, 90))]
    assert tables[0] == tables[1]
    assert abs(psnr(ours, plane) - psnr(cpu, plane)) < 0.5
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encoded[1]))), tiny)


def test_the_encode_parameters_are_the_ones_nvimgcodec_0_9_takes(codec):
    """``EncodeParams(quality=...)`` became ``quality_type``/``quality_value`` in 0.6: the old call
    raised ``TypeError``, which the codec used to swallow, encoding everything on the CPU."""
    from nvidia import nvimgcodec

    params = codec.encode_params(87)
    assert params.quality_type == nvimgcodec.QualityType.QUALITY
    assert params.quality_value == 87
    assert params.color_spec == nvimgcodec.ColorSpec.GRAY
