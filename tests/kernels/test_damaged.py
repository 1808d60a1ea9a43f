"""Damaged photos (issue 21: "Photos that every viewer opens are rejected"): each class of damage, in every
accepted format, processed or rejected as docs/data.md's table says, with the right reason, the same on the
CPU path and the GPU path's codec (nvImageCodec, here on its CPU backend), and with exact pixels when
processed. The files are made from real encoded photos by ``tests/kernels/damaged.py``.
"""

from __future__ import annotations

import fnmatch
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from graywave.errors import Rejected, RejectReason
from graywave.kernels import Device, gpu_available, histogram, select_device
from graywave.kernels.codecs import decode_luma, read_header
from graywave.service.batch import Upload, process_uploads
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.layout import parse_upload_key
from tests.helpers import DAY, put_uploads
from tests.kernels.damaged import PROCESSED, Case, all_cases, insert, jpeg, pillow_outcome

MAX = 10_000_000
CASES = all_cases()
DATA_DOC = Path(__file__).resolve().parents[2] / "docs" / "data.md"


def outcome(data: bytes) -> tuple[str, str]:
    try:
        decode_luma(data, MAX)
    except Rejected as rejected:
        return str(rejected.reason), rejected.detail
    return PROCESSED, ""


def expected_plane(case: Case) -> np.ndarray:
    """The plane a processed case must have: its undamaged original's, or Pillow's decode of its bytes."""
    source = case.original if case.original is not None else case.data
    image = Image.open(io.BytesIO(source))
    if case.format == "JPEG":
        image.draft("L", image.size)  # libjpeg's own Y plane
        return np.asarray(image.convert("L"))
    return decode_luma(source, MAX).plane if case.original is not None else np.asarray(image.convert("L"))


def test_a_jpeg_with_3_stray_bytes_before_a_marker_is_processed_with_its_exact_pixels():
    """The issue's photo: "3 extraneous bytes before marker 0xc4", which Pillow, browsers and phones open.
    graywave rejected it as ``corrupt`` (libjpeg's warnings were errors)."""
    clean = jpeg()
    dht = clean.index(b"\xff\xc4")
    stray = insert(clean, dht, b"\x00\x01\x02")
    assert pillow_outcome(stray) == PROCESSED
    decoded = decode_luma(stray, MAX)
    assert np.array_equal(decoded.plane, decode_luma(clean, MAX).plane)
    assert read_header(stray, MAX).format == "JPEG"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_each_damaged_photo_is_processed_or_rejected_as_the_table_says(case):
    got, detail = outcome(case.data)
    assert got == case.outcome, f"{case.damage}: {detail}"
    if got == PROCESSED:
        assert np.array_equal(decode_luma(case.data, MAX).plane, expected_plane(case))
    else:
        assert detail


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_pillow_does_what_the_table_says(case):
    """The table's column of what viewers do (Pillow, default settings), checked."""
    assert pillow_outcome(case.data) == case.pillow


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_the_header_check_never_gives_another_reason_than_the_decode(case):
    """``read_header`` (the API's upload check, the GPU path's first step) rejects what the header shows,
    with the reason the decode gives; damage after the header passes it, and the decode rejects it."""
    try:
        read_header(case.data, MAX)
    except Rejected as rejected:
        assert str(rejected.reason) == case.outcome
    else:
        assert case.outcome in (PROCESSED, "truncated", "corrupt")


def test_reasons_follow_the_structure_not_the_decoders_words():
    """``truncated`` means the file ends early; a full-length file with damaged data is ``corrupt``; a file
    that starts as a known format is never ``not_an_image``."""
    signatures = {
        "JPEG": b"\xff\xd8",
        "PNG": b"\x89PNG\r\n\x1a\n",
        "WEBP": b"RIFF\x00\x10\x00\x00WEBPVP8 ",
        "HEIF": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
        "AVIF": b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf",
    }
    junk = bytes(range(1, 255)) * 8  # no FF: nothing a decoder can read as a marker
    for fmt, signature in signatures.items():
        reason, detail = outcome(signature + junk)
        assert reason in ("corrupt", "truncated"), (fmt, reason, detail)
        reason, _ = outcome(signature[: max(2, len(signature) - 3)])
        assert reason in ("corrupt", "truncated"), fmt
    assert outcome(b"hello, this is not an image")[0] == "not_an_image"
    # A full-length JPEG whose image data runs into a marker is corrupt: libjpeg says "premature end of data
    # segment", which the old words-based mapping called truncated.
    damaged = next(case for case in CASES if case.name == "jpeg-junk-lot")
    assert len(damaged.data) == len(jpeg())
    reason, detail = outcome(damaged.data)
    assert reason == "corrupt" and "premature end of data segment" in detail


def test_the_data_doc_table_lists_every_class():
    """docs/data.md's "Damaged photos" table names the fixtures of each row (globs): every case is in a row,
    and each row's outcome is the case's."""
    text = DATA_DOC.read_text()
    start = text.index("### Damaged photos: processed or rejected")
    section = text[start : text.index("\n### ", start + 10)]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and "`" in cells[-1]:
            patterns = re.findall(r"`([a-z0-9*-]+)`", cells[-1])
            rows.append((cells[2], patterns))
    assert rows, "no table found"
    for case in CASES:
        matching = [verdict for verdict, patterns in rows if any(fnmatch.fnmatch(case.name, p) for p in patterns)]
        assert matching, f"{case.name} is in no row of docs/data.md's table"
        for verdict in matching:
            assert re.split(r"[ ,(]", verdict.strip("*"))[0] == case.outcome, (case.name, verdict)


# The GPU path's codec, nvImageCodec, on its CPU backend: the same classification, but for what only an
# entropy decode shows (docs/data.md). A wave records the reasons through ``process_uploads``.


JPEG_CASES = [case for case in CASES if case.format == "JPEG"]


@pytest.fixture(scope="module")
def nv_codec():
    from graywave.kernels.gpu_codecs import NvImageCodecLuma

    return NvImageCodecLuma(Device("cpu"))


def uploads_of(settings, cases: list[Case]) -> tuple[list[Upload], LocalBlobStore]:
    extensions = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "HEIF": "heic", "AVIF": "avif"}
    files = {f"u{i % 3}/{case.name}.{extensions[case.format]}": case.data for i, case in enumerate(cases)}
    keys = put_uploads(settings.blob_url, DAY, files)
    store = LocalBlobStore(settings.blob_url)
    blobs = {blob.key: blob for blob in store.list("uploads/")}
    return [Upload(parse_upload_key(key), blobs[key]) for key in keys], store


def outcomes(result) -> dict[str, str]:
    found = {row.source_key.rsplit("/", 1)[1].rsplit(".", 1)[0]: PROCESSED for row in result.images}
    found.update({row.source_key.rsplit("/", 1)[1].rsplit(".", 1)[0]: row.reason for row in result.rejects})
    return found


def test_a_wave_batch_records_each_damaged_photo_as_the_table_says(settings):
    uploads, store = uploads_of(settings, list(CASES))
    result = process_uploads(uploads, store, settings, select_device("cpu"))
    assert outcomes(result) == {case.name: case.outcome for case in CASES}
    by_name = {case.name: case for case in CASES}
    for row in result.images:
        case = by_name[row.source_key.rsplit("/", 1)[1].rsplit(".", 1)[0]]
        assert list(row.histogram) == histogram(expected_plane(case), settings.bins).tolist(), case.name
    for row in result.rejects:
        assert row.detail


def test_the_gpu_codec_path_classifies_each_damaged_jpeg_as_the_cpu_path(settings, nv_codec):
    """``process_uploads`` with nvImageCodec: the structure is checked before nvImageCodec decodes
    (``codecs.checked_jpeg``), so that an early end, restart markers out of order and the rest of the
    structural classes give the CPU path's reason (``None`` from the codec, then the CPU's reject: not a
    fallback), and stray bytes between segments are decoded by nvImageCodec itself. The one difference,
    said in docs/data.md: damage that only libjpeg-turbo's strict entropy decode shows (``gpu_sees``) is
    decoded by nvImageCodec, which reports nothing of it."""
    uploads, store = uploads_of(settings, JPEG_CASES)
    device = select_device("cpu")
    cpu = outcomes(process_uploads(uploads, store, settings, device))
    batched = process_uploads(uploads, store, settings, device, nv_codec)
    gpu = outcomes(batched)
    for case in JPEG_CASES:
        if case.gpu_sees:
            assert gpu[case.name] == cpu[case.name] == case.outcome, case.name
        else:
            assert (cpu[case.name], gpu[case.name]) == ("corrupt", PROCESSED), case.name
    cpu_rows = {row.source_key: row.histogram for row in process_uploads(uploads, store, settings, device).images}
    for row in batched.images:
        name = row.source_key.rsplit("/", 1)[1].rsplit(".", 1)[0]
        if next(case for case in JPEG_CASES if case.name == name).gpu_sees:
            assert row.histogram == cpu_rows[row.source_key], name
    # Stray bytes between segments, which nvImageCodec's parser refuses, are taken out first: no fallback.
    fell_back = {f.source_key.rsplit("/", 1)[1] for f in batched.fallbacks}
    assert not {name for name in fell_back if "stray-before" in name}, fell_back


def test_the_gpu_codec_gives_none_for_what_the_structure_check_rejects(nv_codec):
    cases = {case.name: case for case in JPEG_CASES}
    batch = [cases[name].data for name in ("jpeg-clean", "jpeg-cut-mid-scan", "jpeg-stray-before-dht", "jpeg-no-eoi")]
    planes = nv_codec.decode(batch)
    assert [plane is None for plane in planes] == [False, True, False, True]
    assert np.array_equal(planes[0], planes[2])


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs an NVIDIA GPU, CuPy and numba-cuda (the gpu extra)")
def test_nvjpeg_on_a_gpu_classifies_each_damaged_jpeg_as_the_cpu_path(settings):
    """On a GPU: the same check with nvJPEG (for the structural classes; what nvJPEG does with entropy-level
    damage is printed, to be written in docs/data.md once seen)."""
    from graywave.kernels.gpu_codecs import NvImageCodecLuma, nvimgcodec_available

    if not nvimgcodec_available():
        pytest.skip("needs nvImageCodec (the gpu extra)")
    device = select_device("gpu")
    uploads, store = uploads_of(settings, JPEG_CASES)
    cpu = outcomes(process_uploads(uploads, store, settings, select_device("cpu")))
    gpu = outcomes(process_uploads(uploads, store, settings, device, NvImageCodecLuma(device)))
    for case in JPEG_CASES:
        if case.gpu_sees:
            assert gpu[case.name] == cpu[case.name] == case.outcome, case.name
        else:
            print(f"nvJPEG, {case.name}: {gpu[case.name]} (CPU: {cpu[case.name]})")


def test_reject_reasons_are_the_stable_codes():
    assert {case.outcome for case in CASES} <= {PROCESSED, *map(str, RejectReason)}
