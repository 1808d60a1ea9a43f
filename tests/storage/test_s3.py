"""The S3 blob store against SeaweedFS on 127.0.0.1 (``local_s3``: a real S3 server that checks credentials)."""

import os
import time
from datetime import UTC, datetime

import boto3
import httpx
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from graywave.errors import BackendUnavailable, BlobExists, BlobNotFound, Rejected, RejectReason
from graywave.storage.blobs import open_blob_store
from graywave.storage.s3 import S3BlobStore, split_s3_url
from tests.helpers import S3_ACCESS_KEY, S3_SECRET_KEY, SERVER_TIMEOUT_S


@pytest.fixture
def store(local_s3) -> S3BlobStore:
    return S3BlobStore(f"s3://{local_s3.new_bucket()}/root/prefix", endpoint_url=local_s3.endpoint)


def test_urls_split_into_bucket_and_prefix():
    assert split_s3_url("s3://b/x/y/") == ("b", "x/y/")
    assert split_s3_url("s3://b") == ("b", "")
    with pytest.raises(ValueError):
        split_s3_url("s3:///x")


def test_write_read_list_delete(store):
    store.write("uploads/2026-11-25/u/a.jpg", b"one", "image/jpeg")
    store.write("uploads/2026-11-25/v/b.jpg", b"two!", "image/jpeg")
    store.write("uploads/2026-11-24/u/c.jpg", b"three", "image/jpeg")
    assert store.read("uploads/2026-11-25/v/b.jpg") == b"two!"
    listed = list(store.list("uploads/2026-11-25/"))
    assert [(b.key, b.size) for b in listed] == [("uploads/2026-11-25/u/a.jpg", 3), ("uploads/2026-11-25/v/b.jpg", 4)]
    assert all(abs((b.modified - datetime.now(UTC)).total_seconds()) < 60 for b in listed)
    assert store.url_for("a/b.jpg") == f"s3://{store.bucket}/root/prefix/a/b.jpg"
    store.delete("uploads/2026-11-25/v/b.jpg")
    with pytest.raises(BlobNotFound):
        store.read("uploads/2026-11-25/v/b.jpg")
    # Keys are relative to the prefix: the bucket holds them under it.
    raw = boto3.client("s3", endpoint_url=store.client.meta.endpoint_url)
    assert raw.get_object(Bucket=store.bucket, Key="root/prefix/uploads/2026-11-24/u/c.jpg")["Body"].read() == b"three"


def test_reads_are_capped_without_downloading_the_rest(store):
    store.write("a/big.jpg", b"x" * 1000, "image/jpeg")
    store.write("a/empty.jpg", b"", "image/jpeg")
    assert store.read("a/big.jpg", max_bytes=1000) == b"x" * 1000
    assert store.read("a/empty.jpg", max_bytes=10) == b""
    with pytest.raises(Rejected) as refused:
        store.read("a/big.jpg", max_bytes=999)
    assert refused.value.reason == RejectReason.TOO_LARGE


def test_listing_follows_every_page(store):
    keys = [f"uploads/2026-11-25/u{i:03d}/p.jpg" for i in range(25)]
    for key in keys:
        store.write(key, b"x", "image/jpeg")
    store.page_size = 7
    assert [b.key for b in store.list("uploads/")] == keys


class _Body:
    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_):
        yield self.data


INTERNAL_ERROR = b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>"
SLOW_DOWN = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"


def test_throttling_and_server_errors_are_retried(store):
    store.write("a.jpg", b"data", "image/jpeg")
    failures = {"left": 3}

    def throttle(request, **_):
        if failures["left"]:
            failures["left"] -= 1
            return AWSResponse(request.url, 503, {}, _Body(SLOW_DOWN))
        return None

    store.client.meta.events.register("before-send.s3.GetObject", throttle)
    try:
        assert store.read("a.jpg") == b"data"
    finally:
        store.client.meta.events.unregister("before-send.s3.GetObject", throttle)
    assert failures["left"] == 0


def test_a_store_that_answers_5xx_past_the_retry_window_fails_once_it_has_passed(store):
    """Tried again through the window (GRAYWAVE_BACKEND_RETRY_S), and not after it: botocore's own
    retries went on past it, up to 8 attempts with a random back-off. (A throttling answer, 503
    SlowDown, may also wait for a token of botocore's adaptive rate limiter: up to 2 s more.)"""
    store.write("a.jpg", b"data", "image/jpeg")
    store.retry_s = 2.0
    tries: list[float] = []

    def failing(request, **_):
        tries.append(time.monotonic())
        return AWSResponse(request.url, 500, {}, _Body(INTERNAL_ERROR))

    store.client.meta.events.register("before-send.s3.GetObject", failing)
    began = time.monotonic()
    try:
        with pytest.raises(BackendUnavailable, match=r"S3 could not read a\.jpg .*InternalError"):
            store.read("a.jpg")
    finally:
        waited = time.monotonic() - began
        store.client.meta.events.unregister("before-send.s3.GetObject", failing)
    assert len(tries) > 2 and 1 < tries[-1] - tries[0] < 2 + 1, tries  # the last try within a wake-up of the window
    assert waited < 2 + 3, waited  # then the failure (a loaded machine's slack); it came 26 s past the window


def test_open_blob_store_shares_one_client_per_url(local_s3):
    url = f"s3://{local_s3.new_bucket()}/x"
    assert open_blob_store(url, local_s3.endpoint) is open_blob_store(url, local_s3.endpoint)


def test_a_bucket_that_cannot_be_reached_is_a_clear_error(local_s3):
    missing = S3BlobStore(f"s3://graywave-no-such-bucket-{os.getpid()}/x", endpoint_url=local_s3.endpoint)
    with pytest.raises(
        BackendUnavailable, match=r"S3 could not list uploads/ \(s3://graywave-no-such-bucket-.*NoSuchBucket"
    ):
        list(missing.list("uploads/"))
    with pytest.raises(BackendUnavailable, match=r"S3 could not write a\.jpg"):
        missing.write("a.jpg", b"x", "image/jpeg")


def test_a_write_that_must_not_overwrite_is_a_conditional_create(store):
    store.write("uploads/2026-11-25/ann/a.jpg", b"first", "image/jpeg", overwrite=False)
    with pytest.raises(BlobExists):
        store.write("uploads/2026-11-25/ann/a.jpg", b"second", "image/jpeg", overwrite=False)
    assert store.read("uploads/2026-11-25/ann/a.jpg") == b"first"


def test_a_second_conditional_create_of_a_key_is_refused_by_the_server(store):
    """What ``overwrite=False`` and the lake's Delta commits stand on: ``If-None-Match: *`` answers 412."""
    key = store._key("_delta_log/00000000000000000000.json")
    store.client.put_object(Bucket=store.bucket, Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as refused:
        store.client.put_object(Bucket=store.bucket, Key=key, Body=b"second", IfNoneMatch="*")
    answer = refused.value.response
    assert (answer["Error"]["Code"], answer["ResponseMetadata"]["HTTPStatusCode"]) == ("PreconditionFailed", 412)
    assert store.read("_delta_log/00000000000000000000.json") == b"first"


@pytest.mark.parametrize(
    ("key_id", "secret", "code"),
    [
        (S3_ACCESS_KEY, "not-the-secret", "SignatureDoesNotMatch"),
        ("AKIAWRONGWRONGWRONG0", S3_SECRET_KEY, "InvalidAccessKeyId"),
    ],
)
def test_the_server_refuses_wrong_credentials(local_s3, store, key_id, secret, code):
    store.write("a.jpg", b"data", "image/jpeg")
    wrong = boto3.client("s3", endpoint_url=local_s3.endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret)
    with pytest.raises(ClientError) as refused:
        wrong.get_object(Bucket=store.bucket, Key=store._key("a.jpg"))
    answer = refused.value.response
    assert (answer["Error"]["Code"], answer["ResponseMetadata"]["HTTPStatusCode"]) == (code, 403)
    with pytest.raises(ClientError, match="Forbidden"):  # a HEAD's answer has no body: only its status
        wrong.head_bucket(Bucket=store.bucket)
    unsigned = httpx.get(f"{local_s3.endpoint}/{store.bucket}/{store._key('a.jpg')}", timeout=SERVER_TIMEOUT_S)
    assert unsigned.status_code == 403 and "AccessDenied" in unsigned.text

    mine = S3BlobStore(store.url, endpoint_url=local_s3.endpoint, client=wrong)
    with pytest.raises(BackendUnavailable, match=f"S3 refused to let this machine read a.jpg.*{code}"):
        mine.read("a.jpg")


def test_the_s3_retry_window_is_the_settings_backend_retry(s3_settings, monkeypatch):
    """GRAYWAVE_BACKEND_RETRY_S is how long an unreachable store is waited for, for the blobs, the
    lake and delta-rs's own requests (its retry_timeout)."""
    from graywave.config import Settings
    from graywave.service.backends import Backends

    monkeypatch.setenv("GRAYWAVE_BACKEND_RETRY_S", "7")
    backends = Backends.open(Settings())
    assert backends.blobs.retry_s == 7  # type: ignore[attr-defined]
    assert backends.lake.store.retry_s == 7  # type: ignore[attr-defined]
    assert backends.lake.storage_options()["retry_timeout"] == "7s"
