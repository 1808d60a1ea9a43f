"""A decode fuzz test: mutated photos of every accepted format end as a plane or as ``Rejected``.

The seed corpus is made here (small synthetic photos in JPEG, PNG, WebP, HEIC and AVIF); Hypothesis
flips, overwrites, truncates, duplicates and splices their bytes. Any exception other than
``Rejected`` would fail a wave's batch. Each decode must also stay within a time and memory bound
(a hang or a bomb guard, far above what a 64 x 48 photo takes).
"""

from __future__ import annotations

import resource
import time
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graywave.errors import Rejected, RejectReason
from graywave.kernels.codecs import decode_luma
from graywave.service.samples import encode, synthetic_photo

FORMATS = ("JPEG", "PNG", "WEBP", "HEIF", "AVIF")
MAX_PIXELS = 4_000_000
SECONDS_PER_DECODE = 5.0
GROWTH_BYTES = 512 * 1024 * 1024


@cache
def seed(fmt: str) -> bytes:
    rgb = synthetic_photo(64, 48, seed=FORMATS.index(fmt))
    return encode(rgb, fmt, quality=80) if fmt in ("JPEG", "WEBP") else encode(rgb, fmt)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    fmt = draw(st.sampled_from(FORMATS))
    data = bytearray(seed(fmt))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "overwrite", "truncate", "duplicate", "insert"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at : at + len(chunk)] = chunk
        elif kind == "truncate":
            del data[max(at, 1) :]
        elif kind == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.sampled_from([b"\xff\xd8", b"\xff\xd9", b"\x00" * 8, b"\xff" * 8, b"IDAT", b"ftyp"]))
        if not data:
            break
    return fmt, bytes(data)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_seed_corpus_decodes(fmt):
    assert decode_luma(seed(fmt), MAX_PIXELS).plane.shape == (48, 64)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated())
def test_mutated_photos_decode_or_are_rejected_within_bounds(case):
    fmt, data = case
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    try:
        image = decode_luma(data, MAX_PIXELS)
    except Rejected as rejected:
        assert rejected.reason and rejected.detail
        if data.startswith((b"\xff\xd8", b"\x89PNG\r\n\x1a\n")):  # starts as a JPEG, a PNG: damaged, not unknown
            assert rejected.reason != RejectReason.NOT_AN_IMAGE, rejected.detail
    else:
        assert image.plane.dtype == np.uint8 and image.plane.ndim == 2
        assert 0 < image.plane.size <= MAX_PIXELS
    assert time.perf_counter() - started < SECONDS_PER_DECODE, f"a mutated {fmt} took too long"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before < GROWTH_BYTES
