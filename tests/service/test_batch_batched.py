"""The GPU's batch path (``process_uploads_batched``), run here with a host codec standing in for
nvImageCodec: it must give the rows and images of the CPU path, whichever images fall back."""

from __future__ import annotations

import dataclasses

import numpy as np
import simplejpeg

from graywave.kernels import select_device
from graywave.service.batch import Upload, process_uploads, process_uploads_batched
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.layout import parse_upload_key
from tests.helpers import DAY, put_uploads


class HostCodec:
    """libjpeg-turbo in the codec's place; it "cannot" decode or encode the images listed in ``fail``."""

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
    batched = process_uploads_batched(uploads, store, settings, device, codec)
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


def test_what_the_codec_cannot_do_falls_back_to_the_cpu(settings, phone_files):
    codec = HostCodec(fail_decode={0, 2}, fail_encode={1, 4})
    reference, reference_images, batched, store = run(settings, phone_files, codec)
    assert comparable(batched.images) == comparable(reference.images)
    assert comparable(batched.rejects) == comparable(reference.rejects)
    for key, data in reference_images.items():
        assert store.read(key) == data
