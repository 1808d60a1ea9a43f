"""The GPU path on a device: the numba-cuda kernels over CuPy arrays and nvJPEG, against the CPU.

Run on a machine with an NVIDIA GPU and the gpu extra; skipped elsewhere, with the reason. Without
a GPU, the same kernels run under numba-cuda's simulator (``tests/kernels/gpu_sim``), compile to
PTX (``test_ptx.py``), and the codec's calls run on nvImageCodec's CPU backend
(``test_gpu_codecs.py``): never skipped.
"""

import numpy as np
import pytest

from graywave.kernels import gpu_available, histogram, histogram_batch, luma_from_rgb

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_available(), reason="needs an NVIDIA GPU, CuPy and numba-cuda (the gpu extra)"),
]


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


def test_luma_gpu_equals_cpu(cp):
    rgb = np.random.default_rng(0).integers(0, 256, (1023, 769, 3), dtype=np.uint8)
    assert np.array_equal(cp.asnumpy(luma_from_rgb(cp.asarray(rgb))), luma_from_rgb(rgb))


@pytest.mark.parametrize("bins", [1, 16, 256])
def test_histogram_gpu_equals_cpu(cp, bins):
    plane = np.random.default_rng(bins).integers(0, 256, (3024, 4032), dtype=np.uint8)
    gpu = histogram(cp.asarray(plane), bins)
    assert isinstance(gpu, cp.ndarray)
    assert np.array_equal(cp.asnumpy(gpu), histogram(plane, bins))


def test_batch_histogram_gpu_equals_cpu_in_one_launch_and_ragged(cp):
    rng = np.random.default_rng(5)
    stack = rng.integers(0, 256, (8, 300, 200), dtype=np.uint8)
    assert np.array_equal(cp.asnumpy(histogram_batch(cp.asarray(stack))), histogram_batch(stack))
    ragged = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(10, 20), (1, 1), (999, 3)]]
    gpu = histogram_batch([cp.asarray(p) for p in ragged])
    assert np.array_equal(cp.asnumpy(gpu), histogram_batch(ragged))


@pytest.mark.parametrize("metric", ["design", "l1", "chisquare", "intersection", "hellinger", "correlation"])
def test_all_pairs_gpu_equals_cpu(cp, metric):
    from graywave.kernels.similarity import all_pairs_nearest, normalize

    fractions = normalize(np.random.default_rng(9).gamma(0.5, 1.0, (5000, 16)))
    cpu_indices, cpu_distances = all_pairs_nearest(fractions, 10, metric)
    gpu_indices, gpu_distances = all_pairs_nearest(cp.asarray(fractions), 10, metric)
    assert np.array_equal(gpu_indices, cpu_indices)
    assert np.array_equal(gpu_distances, cpu_distances)  # both re-scored in float64


@pytest.fixture(scope="module")
def nv_codec(cp):
    from graywave.kernels import select_device
    from graywave.kernels.gpu_codecs import NvImageCodecLuma, nvimgcodec_available

    if not nvimgcodec_available():
        pytest.skip("needs nvImageCodec (the gpu extra)")
    return NvImageCodecLuma(select_device("gpu"))


@pytest.mark.parametrize(
    "options", [{"quality": 90}, {"quality": 85, "progressive": True}, {"quality": 95, "subsampling": 0}]
)
def test_gpu_decode_matches_the_cpu_y_plane(cp, nv_codec, options):
    """nvJPEG's IDCT is not libjpeg-turbo's. Provisional tolerance, to be set from the first GPU run:
    at most 1 grey level per pixel (nvImageCodec's CPU backend is exact: ``test_gpu_codecs.py``)."""
    from graywave.kernels.codecs import decode_luma
    from graywave.service.samples import encode, synthetic_photo

    data = encode(synthetic_photo(1024, 768, seed=3), "JPEG", **options)
    (plane,) = nv_codec.decode([data])
    assert plane is not None, "nvImageCodec fell back for a plain JPEG"
    cpu = decode_luma(data, 10**9).plane
    assert plane.shape == cpu.shape
    assert int(cp.abs(plane.astype(cp.int16) - cp.asarray(cpu, dtype=cp.int16)).max()) <= 1


def test_gpu_encode_gives_a_grayscale_jpeg(cp, nv_codec):
    import io

    from PIL import Image

    plane = cp.asarray(np.random.default_rng(0).integers(0, 256, (480, 640), dtype=np.uint8))
    (data,) = nv_codec.encode([plane], 90)
    assert data is not None
    image = Image.open(io.BytesIO(data))
    assert (image.format, image.mode, image.size) == ("JPEG", "L", (640, 480))


def test_batch_path_on_the_gpu_matches_the_cpu_path(cp, nv_codec, settings, phone_files):
    from graywave.kernels import select_device
    from graywave.service.batch import Upload, process_uploads
    from graywave.storage.blobs import LocalBlobStore
    from graywave.storage.layout import parse_upload_key
    from tests.helpers import DAY, put_uploads

    keys = put_uploads(settings.blob_url, DAY, phone_files)
    store = LocalBlobStore(settings.blob_url)
    blobs = {blob.key: blob for blob in store.list("uploads/")}
    uploads = [Upload(parse_upload_key(key), blobs[key]) for key in keys]
    cpu = process_uploads(uploads, store, settings, select_device("cpu"))
    gpu = process_uploads(uploads, store, settings, select_device("gpu"), nv_codec)
    plain = {key for key in keys if key.rsplit("/", 1)[1] in ("plain.jpg", "progressive.jpg", "rotated.jpg")}
    assert not plain & {f.source_key for f in gpu.fallbacks}  # nvJPEG decoded and encoded each of them
    assert sorted(r.source_key for r in gpu.rejects) == sorted(r.source_key for r in cpu.rejects)
    assert sorted(r.source_key for r in gpu.images) == sorted(r.source_key for r in cpu.images)  # none missing
    assert len(gpu.images) + len(gpu.rejects) == len(uploads)
    by_key = {r.source_key: r for r in cpu.images}
    for row in gpu.images:
        reference = by_key[row.source_key]
        assert (row.width, row.height, row.format) == (reference.width, reference.height, reference.format)
        moved = np.abs(np.array(row.histogram) - reference.histogram).sum()
        assert moved <= 0.01 * row.pixel_count  # provisional: at most 1% of pixels change bin


def test_the_kernels_run_on_cupys_current_stream(cp):
    """Work queued on a CuPy stream of its own, then a kernel: the kernel runs after that work, on the
    same stream, with no synchronisation between them (on another stream it would count a plane
    still being written)."""
    from graywave.kernels import _gpu

    with cp.cuda.Stream(non_blocking=True) as stream:
        plane = cp.zeros((6000, 8000), dtype=cp.uint8)
        for _ in range(20):
            plane += 1  # queued, asynchronous
        counts = _gpu.counts256(plane)
        stream.synchronize()
    assert int(counts[20]) == plane.size
