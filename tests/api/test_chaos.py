"""A chaos test: for a while, concurrent uploads, uploads processed at once, deletes, lists,
reprocessing and two waves run against one API and one lake, with no lock. Afterwards nothing answered 5xx, every
upload was deleted or is exactly one row, processed images match the rows one to one, and a rerun
changes nothing. Under a real uvicorn (``live_api``): the actors are concurrent clients, each on a
connection of its own, answered by the server's threads."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from graywave.service.backends import Backends
from graywave.service.wave import run_wave
from tests.api.test_api import DARK, PHOTO, upload

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("reprocess_inside_requests")]
SECONDS = 25


class Chaos:
    """The actors' shared bookkeeping, under one lock: the statuses answered, the images uploaded (image
    id -> user) and deleted, and what an actor raised."""

    def __init__(self, api) -> None:
        self.api = api
        self.stop = threading.Event()
        self.statuses: Counter[int] = Counter()
        self.uploaded: dict[str, str] = {}
        self.deleted: set[str] = set()
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []
        self.clients = {who: api.client(who) for who in ("alice", "bob", "admin")}

    def note(self, response) -> None:
        with self.lock:
            self.statuses[response.status_code] += 1

    def actor(self, work) -> threading.Thread:
        """A thread that does ``work`` until the run stops."""

        def loop() -> None:
            rng = random.Random(threading.get_ident())
            try:
                while not self.stop.is_set():
                    work(rng)
            except BaseException as error:  # noqa: BLE001 - reported after the run
                self.errors.append(error)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        return thread

    def uploads(self, rng: random.Random, wait: bool = False) -> None:
        user = rng.choice(["alice", "bob"])
        # Names of their own: a name a delete freed may be taken again, and with it the image id,
        # which this test's bookkeeping (deleted, or exactly one row) takes as once for all.
        name = f"IMG_{rng.getrandbits(64):016x}.jpg"
        response = upload(self.clients[user], user, rng.choice([PHOTO, DARK]), wait=wait, name=name)
        self.note(response)
        if response.status_code in (200, 202):
            with self.lock:
                self.uploaded[response.json()["image_id"]] = user

    def deletes(self, rng: random.Random) -> None:
        with self.lock:
            choices = [(i, u) for i, u in self.uploaded.items() if i not in self.deleted]
        if not choices:
            time.sleep(0.05)
            return
        image_id, user = rng.choice(choices)
        response = self.clients[user].delete(f"/images/{user}/{image_id}")
        self.note(response)
        if response.status_code == 204:
            with self.lock:
                self.deleted.add(image_id)
        time.sleep(0.2)

    def lists(self, rng: random.Random) -> None:
        self.note(self.clients["admin"].get("/images"))
        self.note(self.clients["alice"].get("/images/alice"))

    def reprocesses(self, rng: random.Random) -> None:
        self.note(self.clients["alice"].put("/images/alice"))
        time.sleep(0.5)

    def waves(self, rng: random.Random) -> None:  # two at once: nothing makes either wait or fail
        settings = self.api.settings
        run_wave(settings, settings.today(), rng.choice(["morning", "evening"]), log=lambda _: None)


@pytest.mark.parametrize("live_api", ["embedded"], indirect=True)
def test_concurrent_writers_readers_and_waves_lose_and_duplicate_nothing(live_api):
    chaos = Chaos(live_api)
    actors = [
        chaos.actor(chaos.uploads),
        chaos.actor(chaos.uploads),
        chaos.actor(lambda rng: chaos.uploads(rng, wait=True)),
        chaos.actor(chaos.deletes),
        chaos.actor(chaos.lists),
        chaos.actor(chaos.reprocesses),
        chaos.actor(chaos.waves),
        chaos.actor(chaos.waves),
    ]
    time.sleep(SECONDS)
    chaos.stop.set()
    for thread in actors:
        thread.join(120)
    statuses, uploaded, deleted = chaos.statuses, chaos.uploaded, chaos.deleted
    assert not chaos.errors, chaos.errors
    assert not [code for code in statuses if code >= 500 or code == 409], statuses  # no refusal for a wave
    assert uploaded and deleted, "the run should have uploaded and deleted"

    run_wave(live_api.settings, live_api.settings.today(), "final", log=lambda _: None)  # what is still pending
    with Backends.open(live_api.settings) as backends:
        images = backends.lake.read("images").to_pylist()
        rejects = backends.lake.read("rejects").to_pylist()
        rows = Counter(row["image_id"] for row in images + rejects)
        assert max(rows.values()) == 1, [i for i, n in rows.items() if n > 1]  # no duplicate
        expected = set(uploaded) - deleted
        extra, lost = set(rows) - expected, expected - set(rows)
        assert not extra and not lost, (statuses, "deleted but recorded:", extra & deleted, "extra:", extra, lost)
        processed = {blob.key for blob in backends.blobs.list("processed/")}
        assert processed == {row["processed_key"] for row in images}  # files match rows, one to one
    again = run_wave(live_api.settings, live_api.settings.today(), "rerun", log=lambda _: None)
    assert (again.processed, again.rejected) == (0, 0)
