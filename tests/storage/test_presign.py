"""Presigned S3 URLs (the phone's direct upload and the processed image's redirect) against SeaweedFS
on 127.0.0.1 (``local_s3``: a real S3 server that checks signatures and POST policies).

Every condition of the upload policy is enforced by the server itself: SeaweedFS 4.48 refuses
another key, another content type, a body over the size range or an empty one, an expired policy and
a policy edited after it was signed. moto, which these tests used before, enforced none of it.
"""

import base64
import json
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from graywave.config import Settings
from graywave.service.backends import Backends
from graywave.storage.blobs import open_blob_store
from graywave.storage.s3 import DEFAULT_REGION, S3BlobStore
from graywave.storage.uploads import presign_upload
from tests.helpers import DAY, SERVER_TIMEOUT_S

PHOTO = b"\xff\xd8\xff\xe0 a photo"


@pytest.fixture
def store(local_s3) -> S3BlobStore:
    return S3BlobStore(f"s3://{local_s3.new_bucket()}/root/prefix", endpoint_url=local_s3.endpoint)


def post_upload(post, data: bytes, **fields: str) -> httpx.Response:
    """The phone's upload: the signed fields, with ``fields`` in their place, and the file."""
    return httpx.post(
        post.url, data=post.fields | fields, files={"file": ("photo.jpg", data, "image/jpeg")}, timeout=SERVER_TIMEOUT_S
    )


def policy_of(post) -> dict:
    return json.loads(base64.b64decode(post.fields["policy"]))


def edited(post, **changes) -> str:
    """The post's policy, edited as a holder of it would (its signature left as it was), base64 again."""
    policy = policy_of(post) | changes
    return base64.b64encode(json.dumps(policy).encode()).decode()


def test_presigned_posts_and_gets_are_signature_version_4_for_the_stores_region(local_s3):
    store = S3BlobStore(f"s3://{local_s3.new_bucket()}/p", endpoint_url=local_s3.endpoint, region="eu-west-1")
    post = presign_upload(store, DAY, "alice", "image/jpeg", max_bytes=1000, expires_s=120)
    assert post.fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    assert post.fields["x-amz-credential"].endswith("/eu-west-1/s3/aws4_request")
    assert not {"AWSAccessKeyId", "signature"} & set(post.fields)  # SigV2's fields
    assert {"x-amz-credential": post.fields["x-amz-credential"]} in policy_of(post)["conditions"]
    assert post_upload(post, PHOTO).status_code == 204

    query = parse_qs(urlsplit(store.presigned_get(post.key, 60)).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Credential"][0].endswith("/eu-west-1/s3/aws4_request")
    assert query["X-Amz-Expires"] == ["60"]
    assert not {"AWSAccessKeyId", "Signature"} & set(query)
    assert httpx.get(store.presigned_get(post.key, 60), timeout=SERVER_TIMEOUT_S).content == PHOTO


def test_the_region_is_the_settings_else_the_aws_chains_else_us_east_1(local_s3, s3_settings, monkeypatch, tmp_path):
    monkeypatch.setenv("GRAYWAVE_S3_REGION", "ap-southeast-2")
    backends = Backends.open(Settings())
    assert backends.blobs.client.meta.region_name == "ap-southeast-2"  # type: ignore[attr-defined]
    assert backends.lake.storage_options()["aws_region"] == "ap-southeast-2"

    url = f"s3://{local_s3.new_bucket()}"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert S3BlobStore(url, endpoint_url=local_s3.endpoint).client.meta.region_name == "eu-central-1"
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-such-config"))
    assert S3BlobStore(url, endpoint_url=local_s3.endpoint).client.meta.region_name == DEFAULT_REGION == "us-east-1"


def test_a_bad_region_setting_is_refused():
    with pytest.raises(ValueError, match="s3_region"):
        Settings(s3_region="eu west/1")


def test_the_store_accepts_the_signed_upload_and_serves_it_through_a_presigned_get(store):
    post = presign_upload(store, DAY, "alice", "image/jpeg", max_bytes=1000, expires_s=120)
    assert post.key.startswith("uploads/2026-11-25/alice/") and post.key.endswith(".jpg")
    sent = post_upload(post, PHOTO)
    assert sent.status_code == 204, sent.text
    assert store.read(post.key) == PHOTO
    got = httpx.get(store.presigned_get(post.key, 60), timeout=SERVER_TIMEOUT_S)
    assert got.status_code == 200 and got.content == PHOTO


def _refusals(store: S3BlobStore, post) -> dict[str, tuple[httpx.Response, int, str]]:
    """Each way a holder of ``post`` may try to go past it: its answer, and the status and code expected."""
    other_user = store._key("uploads/2026-11-25/mallory/x.jpg")
    return {
        "another user's key": (post_upload(post, PHOTO, key=other_user), 403, "AccessDenied"),
        "another key of the same user": (
            post_upload(post, PHOTO, key=store._key("uploads/2026-11-25/alice/chosen.jpg")),
            403,
            "AccessDenied",
        ),
        "the wrong content type": (post_upload(post, PHOTO, **{"Content-Type": "text/html"}), 403, "AccessDenied"),
        "a body over the limit": (post_upload(post, b"\xff\xd8" + b"x" * 99), 400, "EntityTooLarge"),
        "an empty body": (post_upload(post, b""), 400, "EntityTooSmall"),
        "a wider size range (policy edited)": (
            post_upload(
                post,
                b"x" * 500,
                policy=edited(
                    post,
                    conditions=[
                        c
                        for c in policy_of(post)["conditions"]
                        if not (isinstance(c, list) and c[0] == "content-length-range")
                    ]
                    + [["content-length-range", 1, 1000]],
                ),
            ),
            403,
            "SignatureDoesNotMatch",
        ),
        "any key (policy edited)": (
            post_upload(
                post,
                PHOTO,
                key=other_user,
                policy=edited(
                    post,
                    conditions=[c for c in policy_of(post)["conditions"] if not (isinstance(c, dict) and "key" in c)]
                    + [["starts-with", "$key", ""]],
                ),
            ),
            403,
            "SignatureDoesNotMatch",
        ),
        "a later expiry (policy edited)": (
            post_upload(post, PHOTO, policy=edited(post, expiration="2099-01-01T00:00:00Z")),
            403,
            "SignatureDoesNotMatch",
        ),
    }


def test_the_store_refuses_every_upload_outside_the_signed_policy(store):
    post = presign_upload(store, DAY, "alice", "image/jpeg", max_bytes=100, expires_s=120)
    for what, (answer, status, code) in _refusals(store, post).items():
        assert (answer.status_code, f"<Code>{code}</Code>" in answer.text) == (status, True), (what, answer.text)
    assert list(store.list("")) == []  # nothing was stored, under any key
    assert post_upload(post, PHOTO).status_code == 204  # and the policy itself still works
    assert [blob.key for blob in store.list("")] == [post.key]


def test_the_store_refuses_an_expired_policy(store):
    """A policy whose expiry has passed (signed with one already past: no waiting on a clock)."""
    post = presign_upload(store, DAY, "alice", "image/jpeg", max_bytes=100, expires_s=-60)
    assert datetime.fromisoformat(policy_of(post)["expiration"]) < datetime.now(UTC)
    refused = post_upload(post, PHOTO)
    assert refused.status_code == 403 and "Policy expired" in refused.text, refused.text
    assert list(store.list("")) == []


def test_the_store_refuses_an_edited_presigned_get(store):
    store.write("processed/2026-11-25/alice/a.jpg", PHOTO, "image/jpeg")
    store.write("processed/2026-11-25/bob/b.jpg", b"bob's", "image/jpeg")
    url = store.presigned_get("processed/2026-11-25/alice/a.jpg", 60)
    assert httpx.get(url, timeout=SERVER_TIMEOUT_S).content == PHOTO
    for forged in (url.replace("/alice/a.jpg", "/bob/b.jpg"), url.replace("X-Amz-Expires=60", "X-Amz-Expires=600")):
        refused = httpx.get(forged, timeout=SERVER_TIMEOUT_S)
        assert refused.status_code == 403 and "SignatureDoesNotMatch" in refused.text, refused.text


def test_the_presigned_policy_pins_key_size_type_and_expiry(store):
    before = datetime.now(UTC)
    post = presign_upload(store, DAY, "bob", "image/heic", max_bytes=5_000_000, expires_s=300)
    conditions = policy_of(post)["conditions"]
    assert {"key": store._key(post.key)} in conditions
    assert {"bucket": store.bucket} in conditions
    assert {"Content-Type": "image/heic"} in conditions
    assert ["content-length-range", 1, 5_000_000] in conditions
    assert len(conditions) == len({json.dumps(c) for c in conditions})  # each once
    expiration = datetime.fromisoformat(policy_of(post)["expiration"])
    assert 290 <= (expiration - before).total_seconds() <= 310
    assert post.fields["key"] == store._key(post.key)
    assert post.fields["Content-Type"] == "image/heic"
    assert not any(isinstance(c, list) and c[0] == "starts-with" for c in conditions)  # no wildcard keys


@pytest.mark.parametrize(
    ("user", "content_type", "message"),
    [("../x", "image/jpeg", "does not match"), ("alice", "text/html", "not one of")],
)
def test_presigning_refuses_bad_users_and_types(store, user, content_type, message):
    with pytest.raises(ValueError, match=message):
        presign_upload(store, DAY, user, content_type, max_bytes=10, expires_s=60)


def test_presigning_needs_s3(tmp_path):
    with pytest.raises(ValueError, match="need an S3 blob store"):
        presign_upload(open_blob_store(str(tmp_path)), DAY, "a", "image/jpeg", 10, 60)
