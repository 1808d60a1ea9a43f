"""Safe retries: POST /images/{user_id} with an Idempotency-Key, on the embedded default (SQLite) and
on S3 + MongoDB. The app is reached in this process (``api``: ``httpx.ASGITransport``), but for eight
requests sent at once on connections of their own to a real uvicorn (``live_api``)."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from graywave.service.tokens import IDEMPOTENCY_TTL_S, open_token_store
from tests.api.test_api import DARK, PHOTO, error_of

EMBEDDED = pytest.mark.parametrize("api", ["embedded"], indirect=True)
pytestmark = pytest.mark.anyio  # the async tests, on the in-process app


def post(
    client: httpx.Client | httpx.AsyncClient,
    user: str,
    key: str | None,
    data: bytes = PHOTO,
    wait: bool = False,
    name="IMG_1.jpg",
):
    """The upload's answer; from an ``httpx.AsyncClient``, the awaitable of it."""
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post(
        f"/images/{user}", params={"wait": wait}, files={"file": (name, data, "image/jpeg")}, headers=headers
    )


async def images_of(client: httpx.AsyncClient, user: str) -> list[dict]:
    items: list[dict] = (await client.get(f"/images/{user}", params={"limit": 100})).json()["items"]
    return items


@pytest.mark.parametrize("wait", [False, True])
async def test_a_retry_with_the_same_key_gets_the_first_answer_and_stores_nothing_new(api, wait):
    """Before: a retry stored a second copy (IMG_1 (2).jpg)."""
    alice, key = api.client("alice"), str(uuid.uuid4())
    first = await post(alice, "alice", key, wait=wait)
    assert first.status_code == (200 if wait else 202), first.text
    again = await post(alice, "alice", key, wait=wait)
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert [i["file_name"] for i in await images_of(alice, "alice")] == ["IMG_1.jpg"]
    other = await post(alice, "alice", str(uuid.uuid4()), wait=wait)  # another key: a new upload
    assert other.status_code == first.status_code and other.json()["image_id"] != first.json()["image_id"]
    assert len(await images_of(alice, "alice")) == 2


async def test_the_same_key_with_another_request_is_422_and_stores_nothing(api):
    alice, key = api.client("alice"), "retry-1"
    assert (await post(alice, "alice", key)).status_code == 202
    for changed in (
        await post(alice, "alice", key, data=DARK),  # another file
        await post(alice, "alice", key, name="IMG_2.jpg"),  # another name
        await post(alice, "alice", key, wait=True),  # other parameters
    ):
        assert error_of(changed) == (422, "idempotency_key_reused"), changed.text
    assert len(await images_of(alice, "alice")) == 1


async def test_a_key_is_scoped_per_user(api):
    key = "shared-key"
    alice = await post(api.client("alice"), "alice", key)
    bob = await post(api.client("bob"), "bob", key)
    assert alice.status_code == bob.status_code == 202
    assert bob.json()["user_id"] == "bob" and "Idempotent-Replayed" not in bob.headers
    admin_for_bob = await post(api.client("admin"), "bob", key)  # the key belongs to bob's uploads, whoever sends it
    assert admin_for_bob.json() == bob.json() and admin_for_bob.headers["Idempotent-Replayed"] == "true"


async def test_a_key_being_answered_is_409_with_retry_after(api):
    """Another process holds the key (claimed in the shared store, not answered yet): 409, nothing stored."""
    store = open_token_store(api.settings)
    try:
        from graywave.service.tokens import Claim, request_fingerprint

        fingerprint = request_fingerprint("alice", "False", "image/jpeg", "IMG_1.jpg", PHOTO)
        claim = store.begin("alice", "held", fingerprint)
        assert isinstance(claim, Claim)
        alice = api.client("alice")
        busy = await post(alice, "alice", "held")
        assert error_of(busy) == (409, "in_progress") and int(busy.headers["Retry-After"]) >= 1
        assert await images_of(alice, "alice") == []
        store.abandoned(claim)  # that process failed: the retry runs
        assert (await post(alice, "alice", "held")).status_code == 202
    finally:
        store.close()
    assert len(await images_of(alice, "alice")) == 1


async def test_a_failed_request_keeps_nothing_and_a_bad_key_is_refused(api):
    alice = api.client("alice")
    for _ in range(2):  # the same key after a refusal: refused again for what it is, not 409 or a replay
        assert error_of(await post(alice, "alice", "k-bad", data=b"not an image")) == (415, "unsupported_media_type")
    assert (await post(alice, "alice", "k-bad")).status_code == 202  # now with a photo: runs
    assert error_of(await post(alice, "alice", "with space")) == (400, "bad_request")
    assert (await post(alice, "alice", "x" * 256)).status_code == 422  # over 255 characters
    assert len(await images_of(alice, "alice")) == 1


@pytest.mark.timeout(180)
def test_concurrent_requests_with_one_key_store_one_upload(live_api):
    """Eight requests at once with one key (wait=true, so the first is still working when the others
    arrive): one upload stored; every other request is a 409 or the first answer again."""
    alice, key, answers = live_api.client("alice"), str(uuid.uuid4()), []
    barrier = threading.Barrier(8)

    def send() -> None:
        with httpx.Client(base_url=live_api.url, headers=alice.headers, timeout=120) as client:
            barrier.wait()
            answers.append(post(client, "alice", key, wait=True))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = alice.get("/images/alice", params={"limit": 100}).json()["items"]
    assert len(stored) == 1
    first = [a for a in answers if a.status_code in (200, 202)]
    assert first and all(a.json() == first[0].json() for a in first)
    assert all(a.status_code in (200, 202, 409) for a in answers), [a.text for a in answers]
    assert all(a.headers["Retry-After"] for a in answers if a.status_code == 409)
    retried = post(alice, "alice", key, wait=True)  # once answered, every retry gets the answer
    assert (
        retried.json() == first[0].json()
        and len(alice.get("/images/alice", params={"limit": 100}).json()["items"]) == 1
    )


@EMBEDDED
async def test_expired_keys_are_purged_and_can_be_used_again(api, monkeypatch):
    from graywave.service import tokens

    store = open_token_store(api.settings)
    fingerprint = tokens.request_fingerprint("alice", "x")
    claim = store.begin("alice", "old", fingerprint)
    assert isinstance(claim, tokens.Claim)
    store.answered(claim, 202, b"{}")
    assert isinstance(store.begin("alice", "old", fingerprint), tokens.Replay)
    later = time.time() + IDEMPOTENCY_TTL_S + 1
    assert store.records.purge(later) == 1  # a day later
    monkeypatch.setattr(tokens.time, "time", lambda: later)
    assert isinstance(store.begin("alice", "old", tokens.request_fingerprint("alice", "y")), tokens.Claim)
    store.close()


async def test_a_request_that_failed_after_storing_is_answered_from_its_upload_on_retry(api, monkeypatch):
    """The upload was stored, then its answer could not be read (the lake away for a moment): 503.
    Its retry answers from that upload; before, it stored a second copy."""
    from graywave.errors import BackendUnavailable
    from graywave.service.images import Images

    real, failures = Images.get, [BackendUnavailable("the lake is away for a moment")]

    def flaky(self, *args, **kwargs):
        if failures:
            raise failures.pop()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Images, "get", flaky)
    alice = api.client("alice")
    assert error_of(await post(alice, "alice", "k-flaky")) == (503, "unavailable")
    assert not failures
    retried = await post(alice, "alice", "k-flaky")
    assert retried.status_code == 202, retried.text
    assert retried.json()["file_name"] == "IMG_1.jpg" and "Idempotent-Replayed" not in retried.headers
    again = await post(alice, "alice", "k-flaky")
    assert again.json() == retried.json() and again.headers["Idempotent-Replayed"] == "true"
    assert len(await images_of(alice, "alice")) == 1
