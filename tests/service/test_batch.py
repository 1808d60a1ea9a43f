import numpy as np
import pytest

from graywave.kernels import select_device
from graywave.service.batch import Upload, process_uploads
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.layout import parse_upload_key
from tests.helpers import DAY, EXPECTED_REJECTS, decode_processed, put_uploads


def test_a_batch_turns_every_upload_into_one_row(settings, phone_files):
    keys = put_uploads(settings.blob_url, DAY, phone_files)
    store = LocalBlobStore(settings.blob_url)
    blobs = {blob.key: blob for blob in store.list("uploads/")}
    uploads = [Upload(parse_upload_key(key), blobs[key]) for key in keys]
    result = process_uploads(uploads, store, settings, select_device("cpu"))

    assert len(result.images) + len(result.rejects) == len(phone_files)
    rejects = {row.source_key.split("/", 2)[2]: row.reason for row in result.rejects}
    assert rejects == EXPECTED_REJECTS
    images = {row.source_key.split("/", 2)[2]: row for row in result.images}
    assert images["dan/actually-a-png.jpg"].format == "PNG"
    assert images["bob/photo.heic"].format == "HEIF"
    for row in images.values():
        assert sum(row.histogram) == row.pixel_count == row.width * row.height == 400 * 300
        assert len(row.histogram) == settings.bins
        processed = decode_processed(store.read(row.processed_key))
        assert (processed.format, processed.mode) == ("JPEG", "L")
        assert processed.size == (row.width, row.height)
        assert row.processed_bytes == len(store.read(row.processed_key))
    assert (images["bob/rotated.jpg"].width, images["bob/rotated.jpg"].height) == (300, 400)
    # Same pixels, same histogram, whatever the container (lossless ones exactly).
    assert images["cat/screenshot.png"].histogram == images["dan/actually-a-png.jpg"].histogram
    assert images["ann/plain.jpg"].histogram == images["bob/rotated.jpg"].histogram
    assert result.pixels == 400 * 300 * len(images)


def test_the_processed_image_is_upright(settings, phone_files):
    files = {"ann/plain.jpg": phone_files["ann/plain.jpg"], "bob/rotated.jpg": phone_files["bob/rotated.jpg"]}
    keys = put_uploads(settings.blob_url, DAY, files)
    store = LocalBlobStore(settings.blob_url)
    blobs = {blob.key: blob for blob in store.list("uploads/")}
    result = process_uploads(
        [Upload(parse_upload_key(k), blobs[k]) for k in keys], store, settings, select_device("cpu")
    )
    plain, rotated = (np.asarray(decode_processed(store.read(r.processed_key))).astype(int) for r in result.images)
    # The rotated upload stores the photo as is, tagged "rotate 90 clockwise to display".
    assert np.abs(np.rot90(plain, -1) - rotated).mean() < 2


def test_a_store_this_machine_cannot_see_fails_the_batch_instead_of_rejecting_it(settings, phone_files, tmp_path):
    """A Dask worker on a host without the blob folder must not record its uploads as vanished."""
    from graywave.errors import BackendUnavailable
    from graywave.service.wave import process_batch

    keys = put_uploads(settings.blob_url, DAY, {"ann/plain.jpg": phone_files["ann/plain.jpg"]})
    blob = next(LocalBlobStore(settings.blob_url).list("uploads/"))
    uploads = [Upload(parse_upload_key(keys[0]), blob)]
    assert len(process_batch(uploads, settings).images) == 1  # where the folder is
    elsewhere = settings.model_copy(update={"blob_url": str(tmp_path / "not-mounted-here")})
    with pytest.raises(BackendUnavailable, match="not-mounted-here is not a folder on this machine"):
        process_batch(uploads, elsewhere)
