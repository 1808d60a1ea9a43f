"""The batch pipeline with a GPU's batch codec (a ``PlainJpegBatchCodec``), run here with a host codec
standing in for nvImageCodec: it must give the rows and images of the CPU's codec, whichever images
fall back."""

from __future__ import annotations

import dataclasses
import io
from collections import Counter

import numpy as np
import pytest
import simplejpeg

from graywave.errors import CodecFailed
from graywave.kernels import select_device
from graywave.kernels.codecs import PlainJpegBatchCodec
from graywave.service.batch import Upload, process_uploads
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.layout import parse_upload_key
from tests.helpers import DAY, put_uploads


class HostCodec(PlainJpegBatchCodec):
    """libjpeg-turbo in nvImageCodec's place; it "cannot" decode or encode the images listed in ``fail``."""

    name = "the host codec"

    def __init__(self, fail_decode: set[int] = frozenset(), fail_encode: set[int] = frozenset()):
        self.fail_decode, self.fail_encode = fail_decode, fail_encode
        self.decoded = 0

    def decode(self, datas):
        self.decoded += len(datas)
        planes = []
        for k, data in enumerate(datas):
            try:
                plane = (
                    None
                    if k in self.fail_decode
                    else simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True)[..., 0]
                )
            except ValueError:  # like nvImageCodec: None for what it cannot decode
                plane = None
            planes.append(plane)
        return planes

    def encode(self, planes, quality):
        return [
            None
            if k in self.fail_encode
            else simplejpeg.encode_jpeg(np.ascontiguousarray(p)[..., None], quality=quality, colorspace="GRAY")
            for k, p in enumerate(planes)
        ]


def comparable(records):
    return sorted(
        ({k: v for k, v in dataclasses.asdict(r).items() if k not in ("processed_at", "seen_at")} for r in records),
        key=str,
    )


def run(settings, phone_files, codec):
    keys = put_uploads(settings.blob_url, DAY, phone_files)
    store = LocalBlobStore(settings.blob_url)
    blobs = {blob.key: blob for blob in store.list("uploads/")}
    uploads = [Upload(parse_upload_key(key), blobs[key]) for key in keys]
    device = select_device("cpu")
    reference = process_uploads(uploads, store, settings, device)
    reference_images = {row.processed_key: store.read(row.processed_key) for row in reference.images}
    batched = process_uploads(uploads, store, settings, device, codec)
    return reference, reference_images, batched, store


def test_the_batch_path_gives_the_rows_of_the_cpu_path(settings, phone_files):
    codec = HostCodec()
    reference, reference_images, batched, store = run(settings, phone_files, codec)
    assert comparable(batched.images) == comparable(reference.images)
    assert comparable(batched.rejects) == comparable(reference.rejects)
    assert batched.pixels == reference.pixels
    assert codec.decoded == 4  # the plain JPEGs only (plain, progressive, rotated, truncated); the rest on the CPU
    for key, data in reference_images.items():
        assert store.read(key) == data  # the same processed images, upright
    # Every other container is decoded on the CPU, and counted so (the truncated JPEG is a reject, not one).
    assert sorted((f.source_key.rsplit("/", 1)[1], f.stage) for f in batched.fallbacks) == [
        ("actually-a-png.jpg", "decode"),
        ("photo.heic", "decode"),
        ("screenshot.png", "decode"),
        ("sticker.webp", "decode"),
    ]
    assert all("decodes plain JPEGs, not" in f.reason for f in batched.fallbacks)


def test_what_the_codec_cannot_do_falls_back_to_the_cpu(settings, phone_files):
    codec = HostCodec(fail_decode={0, 2}, fail_encode={1, 4})
    reference, reference_images, batched, store = run(settings, phone_files, codec)
    assert comparable(batched.images) == comparable(reference.images)
    assert comparable(batched.rejects) == comparable(reference.rejects)
    for key, data in reference_images.items():
        assert store.read(key) == data
    by_reason = {}
    for fallback in batched.fallbacks:
        by_reason.setdefault((fallback.stage, fallback.reason), []).append(fallback.source_key.rsplit("/", 1)[1])
    assert sorted(by_reason[("decode", "the host codec could not decode it")]) == ["plain.jpg", "rotated.jpg"]
    assert len(by_reason[("encode", "the host codec could not encode it")]) == 2


class FailingCodec(HostCodec):
    def decode(self, datas):
        raise CodecFailed("out of device memory")

    def encode(self, planes, quality):
        raise CodecFailed("the encoder is gone")


def test_a_codec_call_that_fails_sends_its_whole_batch_to_the_cpu_counted_with_the_reason(settings, phone_files):
    reference, _, batched, _ = run(settings, phone_files, FailingCodec())
    assert comparable(batched.images) == comparable(reference.images)
    assert comparable(batched.rejects) == comparable(reference.rejects)
    stages = Counter((f.stage, f.reason) for f in batched.fallbacks)
    assert stages[("decode", "out of device memory")] == 3  # the plain JPEGs the CPU could decode
    assert stages[("encode", "the encoder is gone")] == len(reference.images)


def uploads_in(settings, files):
    keys = put_uploads(settings.blob_url, DAY, files)
    store = LocalBlobStore(settings.blob_url)
    blobs = {blob.key: blob for blob in store.list("uploads/")}
    return [Upload(parse_upload_key(key), blobs[key]) for key in keys], store


def test_the_cpu_has_its_own_codec_and_counts_no_fallback(settings, phone_files):
    from graywave.kernels import Device
    from graywave.kernels.codecs import CpuLumaCodec, luma_batch_codec

    codec = luma_batch_codec(Device("cpu"))
    assert isinstance(codec, CpuLumaCodec) and codec.instead_of is None and codec.batch_size == 1
    uploads, store = uploads_in(settings, phone_files)
    result = process_uploads(uploads, store, settings, Device("cpu"))
    assert result.fallbacks == [] and len(result.images) == 7


def test_a_gpu_without_its_batch_codec_counts_every_upload_as_a_fallback(settings, phone_files, monkeypatch):
    from graywave.kernels import Device, gpu_codecs
    from graywave.kernels.codecs import NO_BATCH_CODEC, CpuLumaCodec, luma_batch_codec

    monkeypatch.setattr(gpu_codecs, "nvimgcodec_available", lambda: False)  # the gpu extra without nvImageCodec
    codec = luma_batch_codec(Device("gpu"))
    assert isinstance(codec, CpuLumaCodec) and codec.device == Device("gpu") and codec.instead_of == NO_BATCH_CODEC
    uploads, store = uploads_in(settings, phone_files)
    reference = process_uploads(uploads, store, settings, Device("cpu"))
    # No CuPy here for Device("gpu"): the same stand-in, on the CPU's arrays.
    result = process_uploads(uploads, store, settings, Device("cpu"), CpuLumaCodec(instead_of=codec.instead_of))
    assert comparable(result.images) == comparable(reference.images)
    assert comparable(result.rejects) == comparable(reference.rejects)
    # Each image, once, as a decode (the reason says the encode too); a reject is not a fallback.
    assert [(f.source_key, f.stage, f.reason) for f in result.fallbacks] == [
        (row.source_key, "decode", NO_BATCH_CODEC) for row in reference.images
    ]


def test_the_batch_service_has_no_branch_on_the_device():
    """The device picks its codec (``kernels.codecs.luma_batch_codec``); the pipeline is the same."""
    from pathlib import Path

    from graywave.service import batch

    source = Path(batch.__file__).read_text()
    assert '"gpu"' not in source and "'gpu'" not in source


# The real codec of the GPU path, nvImageCodec, on its CPU backend (no GPU needed).


def test_nvimgcodec_on_its_cpu_backend_gives_the_rows_of_the_cpu_path(settings, phone_files):
    from PIL import Image

    from graywave.kernels import Device
    from graywave.kernels.codecs import decode_luma, upright
    from graywave.kernels.gpu_codecs import NvImageCodecLuma
    from tests.helpers import decode_processed

    reference, reference_images, batched, store = run(settings, phone_files, NvImageCodecLuma(Device("cpu")))
    # Its decode is libjpeg-turbo's Y plane, bit for bit: the same histograms, dimensions and formats.
    # Only the processed JPEGs' bytes differ (another encoder build, the same quantisation).
    assert comparable(batched.rejects) == comparable(reference.rejects)
    assert [{**row, "processed_bytes": 0} for row in comparable(batched.images)] == [
        {**row, "processed_bytes": 0} for row in comparable(reference.images)
    ]
    for row in reference.images:
        shown = upright(decode_luma(store.read(row.source_key), settings.max_pixels))
        ours = np.asarray(decode_processed(store.read(row.processed_key)))
        cpu = np.asarray(Image.open(io.BytesIO(reference_images[row.processed_key])))
        assert ours.shape == cpu.shape == shown.shape
        # At least the fidelity to the upright plane of the CPU's encoder, less 0.5 dB.
        assert psnr(ours, shown) > psnr(cpu, shown) - 0.5, row.source_key
    # The plain JPEGs (baseline, progressive, rotated) never fall back; the other containers do, counted.
    fell_back = {f.source_key.rsplit("/", 1)[1] for f in batched.fallbacks}
    assert fell_back == {"actually-a-png.jpg", "photo.heic", "screenshot.png", "sticker.webp"}


def psnr(a, b) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2)))


class MisusedCodec(HostCodec):
    def decode(self, datas):
        raise TypeError("decode(): incompatible function arguments")  # what nvImageCodec 0.9 said to the old call


def test_a_wrong_call_to_the_codec_fails_the_batch_instead_of_falling_back(settings, phone_files):
    with pytest.raises(TypeError, match="incompatible function arguments"):
        run(settings, phone_files, MisusedCodec())


def test_each_batch_thread_gets_a_codec_of_its_own(monkeypatch):
    """An nvImageCodec decoder shared by two batch threads failed their images (seen as 'could not
    decode it' fallbacks in a two-worker wave): each thread builds its own."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from graywave.kernels import Device, codecs, gpu_codecs
    from graywave.kernels.codecs import CpuLumaCodec, luma_batch_codec

    monkeypatch.setattr(codecs, "_codecs", threading.local())  # none cached by other tests
    monkeypatch.setattr(gpu_codecs, "nvimgcodec_available", lambda: True)
    monkeypatch.setattr(gpu_codecs, "NvImageCodecLuma", lambda device: object())  # no GPU to build one on
    gpu = Device("gpu")
    here = luma_batch_codec(gpu)
    assert not isinstance(here, CpuLumaCodec) and luma_batch_codec(gpu) is here
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(luma_batch_codec, gpu).result() is not here
    assert isinstance(luma_batch_codec(Device("cpu")), CpuLumaCodec)


def test_a_codec_that_cannot_start_sends_the_batch_to_the_cpu_counted_with_its_reason(
    settings, phone_files, monkeypatch
):
    """nvImageCodec present but unable to start (no nvJPEG library, no device): every batch used to
    fail; now the CPU does it, and each image is counted with nvImageCodec's message."""
    from graywave.kernels import Device, gpu_codecs
    from graywave.kernels.codecs import CpuLumaCodec, luma_batch_codec

    def cannot_start(device):
        raise CodecFailed("nvImageCodec cannot start on the gpu: CUDA Runtime failure:\n '#35' | driver")

    monkeypatch.setattr(gpu_codecs, "nvimgcodec_available", lambda: True)
    monkeypatch.setattr(gpu_codecs, "NvImageCodecLuma", cannot_start)
    codec = luma_batch_codec(Device("gpu"))
    assert isinstance(codec, CpuLumaCodec) and codec.device == Device("gpu")
    uploads, store = uploads_in(settings, phone_files)
    reference = process_uploads(uploads, store, settings, Device("cpu"))
    # No CuPy here for Device("gpu"): the same stand-in, on the CPU's arrays.
    result = process_uploads(uploads, store, settings, Device("cpu"), CpuLumaCodec(instead_of=codec.instead_of))
    assert sorted(f.source_key for f in result.fallbacks) == sorted(row.source_key for row in reference.images)
    [reason] = {f.reason for f in result.fallbacks}
    assert reason == "nvImageCodec cannot start on the gpu: CUDA Runtime failure: '#35' / driver"  # one line, no |
