"""S3 (and S3-compatible servers: MinIO, Ceph, moto) as a blob store, through boto3.

    GRAYWAVE_BLOB_URL=s3://bucket/prefix  [GRAYWAVE_S3_ENDPOINT_URL=http://127.0.0.1:9000]
    [GRAYWAVE_S3_REGION=eu-west-1]

Credentials come from the standard AWS chain (environment, shared files, instance or task role);
graywave never reads or logs them. Every request and every presigned URL is signed with Signature
Version 4 (``s3v4``) for the store's region: ``GRAYWAVE_S3_REGION``, else the AWS chain's
(``AWS_REGION``, ``AWS_DEFAULT_REGION``, the profile), else ``us-east-1``. AWS refuses SigV2 for
buckets created since June 2020 and in every region opened since 2014, and a SigV4 URL is valid only
in the region it names: on AWS, set the bucket's region. Throttling and transient errors are retried by botocore's
``adaptive`` retry mode (exponential back-off with client-side rate limiting). A store that cannot
be reached at all (connection refused while it restarts, a connection dropped, no answer to a
connect) or that answers 5xx is waited for longer, up to ``retry_s`` seconds from a request's first
failure, and no longer (a throttling answer, 503 SlowDown, may also wait for a token of the
adaptive mode's rate limiter: up to about 2 s more): botocore's own attempts (8, with a random
back-off) gave up on a restarting server after 4 s. delta-rs's requests get the same window (its ``retry_timeout``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import boto3
import pyarrow.fs as pafs
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
)

from graywave.errors import BackendUnavailable, BlobExists, BlobNotFound, InvalidInput
from graywave.storage.blobs import BlobInfo, too_large

RETRIES = {"mode": "adaptive", "max_attempts": 8}
MAX_POOL_CONNECTIONS = 64
_REFUSED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
"""Error codes that mean this machine's credentials are not accepted (a HEAD request's code is its status)."""
SIGNATURE_VERSION = "s3v4"
DEFAULT_REGION = "us-east-1"
"""The region when neither ``GRAYWAVE_S3_REGION`` nor the AWS chain names one (S3-compatible servers take any)."""
DEFAULT_RETRY_S = 60.0
"""How long a request waits for a store that cannot be reached (``GRAYWAVE_BACKEND_RETRY_S``'s default)."""
UNREACHABLE = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError)
"""Failures of a request that the store never processed: it is down, restarting, or not listening yet."""
MAX_WAIT_S = 5.0


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix/``); the prefix may be empty."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise InvalidInput(f"{url!r} has no bucket: use s3://bucket/prefix")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


@dataclass(frozen=True)
class PresignedPost:
    """What a phone needs to upload one object straight to S3: POST ``fields`` and the file to ``url``."""

    url: str
    fields: dict[str, str]
    key: str
    expires_at: datetime


class S3BlobStore:
    page_size = 1000
    remote = True

    def __init__(
        self,
        url: str,
        endpoint_url: str | None = None,
        client: Any = None,
        *,
        retry_s: float = DEFAULT_RETRY_S,
        region: str | None = None,
    ):
        self.bucket, self.prefix = split_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url
        self.retry_s = retry_s
        self.configured_region = region or boto3.session.Session().region_name
        """The region that ``GRAYWAVE_S3_REGION`` or the AWS chain names; None when neither does."""
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=self.configured_region or DEFAULT_REGION,
            config=Config(
                signature_version=SIGNATURE_VERSION, retries=RETRIES, max_pool_connections=MAX_POOL_CONNECTIONS
            ),
        )
        # Asked before botocore's own retry handler: a delay here wins, None leaves the answer to it.
        self.client.meta.events.register_first("needs-retry.s3", self._wait_for_the_store)

    def _wait_for_the_store(
        self,
        response: Any = None,
        caught_exception: Exception | None = None,
        request_dict: dict[str, Any] | None = None,
        attempts: int = 1,
        operation: Any = None,
        **_: Any,
    ) -> float | None:
        """botocore's ``needs-retry`` event: the seconds to wait before trying a request again whose
        store was unreachable or answered 5xx, until ``retry_s`` after its first failure; then the
        failure itself, raised. (Answered None, botocore's own handler, asked next, would go on
        retrying it: 8 attempts in all, with a random back-off, 4 to 9 s past a window of 4 s.)"""
        status = response[0].status_code if response is not None else None
        if not isinstance(caught_exception, UNREACHABLE) and not (status is not None and status >= 500):
            return None
        context = (request_dict or {}).setdefault("context", {})
        first: float = context.setdefault("graywave_first_failure", time.monotonic())
        left = first + self.retry_s - time.monotonic()
        if left > 0:
            return min(MAX_WAIT_S, 0.25 * 2.0 ** min(attempts, 8), left)
        if caught_exception is not None:
            raise caught_exception
        raise ClientError(response[1], operation.name)  # what botocore raises for a 5xx it stops retrying

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or "//" in key:
            raise InvalidInput(f"invalid blob key {key!r}")
        return self.prefix + key

    @contextlib.contextmanager
    def _failing_as(self, what: str) -> Iterator[None]:
        """S3 errors that outlast botocore's retries, as ``BackendUnavailable`` naming the store."""
        try:
            yield
        except (BotoCoreError, ClientError) as error:
            if isinstance(error, ClientError) and _code(error) in _REFUSED:
                raise BackendUnavailable(
                    f"S3 refused to let this machine {what} ({self.url}): {error}; check its AWS credentials"
                ) from error
            raise BackendUnavailable(f"S3 could not {what} ({self.url}): {error}") from error

    def check(self) -> None:
        with self._failing_as("read the bucket"):
            self.client.head_bucket(Bucket=self.bucket)

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix, PaginationConfig={"PageSize": self.page_size}
        )
        with self._failing_as(f"list {prefix}"):
            for page in pages:
                for item in page.get("Contents", ()):
                    key = item["Key"][len(self.prefix) :]
                    yield BlobInfo(key, item["Size"], item["LastModified"].astimezone(UTC))

    def read(self, key: str, max_bytes: int | None = None) -> bytes:
        with self._failing_as(f"read {key}"):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as error:
                if _code(error) in ("NoSuchKey", "404"):
                    raise BlobNotFound(key) from None
                raise
            body = response["Body"]
            if max_bytes is not None and response.get("ContentLength", 0) > max_bytes:
                body.close()  # the rest is never downloaded
                raise too_large(key, max_bytes)
            data: bytes = body.read() if max_bytes is None else body.read(max_bytes + 1)
            if max_bytes is not None and len(data) > max_bytes:  # a server that gave no length
                raise too_large(key, max_bytes)
            return data

    def write(self, key: str, data: bytes, content_type: str, *, overwrite: bool = True) -> None:
        condition = {} if overwrite else {"IfNoneMatch": "*"}  # S3's conditional create
        with self._failing_as(f"write {key}"):
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type, **condition
                )
            except ClientError as error:
                if not overwrite and _code(error) in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise BlobExists(key) from None
                raise

    def delete(self, key: str) -> None:
        with self._failing_as(f"delete {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def exists(self, key: str) -> bool:
        with self._failing_as(f"look up {key}"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as error:
                if _code(error) in ("NoSuchKey", "404", "NotFound"):
                    return False
                raise
            return True

    def url_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def arrow_filesystem(self) -> tuple[pafs.FileSystem, str]:
        """pyarrow's own S3 client on the same endpoint and region; credentials come from the same
        standard AWS chain as boto3's."""
        region = self.configured_region
        if region is None:  # as boto3 would find it by a redirect: ask S3 where the bucket is
            region = "us-east-1" if self.endpoint_url else pafs.resolve_s3_region(self.bucket)
        options: dict[str, Any] = {"region": region}
        if self.endpoint_url:
            endpoint = urlsplit(self.endpoint_url)
            options.update(endpoint_override=endpoint.netloc, scheme=endpoint.scheme or "https")
        return pafs.S3FileSystem(**options), f"{self.bucket}/{self.prefix}".rstrip("/")

    def presigned_get(self, key: str, expires_s: int) -> str:
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires_s
        )
        return url

    def presigned_post(self, key: str, content_type: str, max_bytes: int, expires_s: int) -> PresignedPost:
        """A write-only, single-object upload: this key, this content type, 1..max_bytes bytes, soon expiring."""
        full_key = self._key(key)
        post = self.client.generate_presigned_post(
            Bucket=self.bucket,
            Key=full_key,
            Fields={"Content-Type": content_type},
            Conditions=[  # boto3 adds {"bucket": ...} and {"key": full_key} itself
                {"Content-Type": content_type},
                ["content-length-range", 1, max_bytes],
            ],
            ExpiresIn=expires_s,
        )
        expires_at = datetime.now(UTC) + timedelta(seconds=expires_s)
        return PresignedPost(url=post["url"], fields=post["fields"], key=key, expires_at=expires_at)

    def table_location(self, key: str) -> tuple[str, dict[str, str]]:
        """delta-rs's (and Polars') S3 client on the same endpoint, region and credentials as boto3's
        (object_store's option names, which both take). delta-rs's commits
        create each log entry with a conditional PUT (``If-None-Match``), which S3 and S3-compatible
        stores (SeaweedFS, MinIO) honour: concurrent writers need no lock."""
        location = f"s3://{self.bucket}/{self.prefix}".rstrip("/") + (f"/{key}" if key else "")
        options = {"aws_region": self.client.meta.region_name or DEFAULT_REGION}
        credentials = self.client._request_signer._credentials  # boto3's resolved chain (profile, env, role)
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            options.update(aws_access_key_id=frozen.access_key, aws_secret_access_key=frozen.secret_key)
            if frozen.token:
                options["aws_session_token"] = frozen.token
        if self.endpoint_url:
            options.update(aws_endpoint_url=self.endpoint_url, aws_allow_http="true")
        options["retry_timeout"] = f"{self.retry_s:g}s"  # delta-rs's retries of a request, as boto3's above
        return location, options


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
