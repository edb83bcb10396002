"""The change feed end to end, on SQLite and on PostgreSQL: two instances (from two
copies of the repository) take sign-ups with cities and re-posts at once, a promotion
is followed by `reassign`, users are erased; meanwhile the worker delivers to a real
receiver that fails, times out, goes down for a while, and the worker is killed
mid-batch and started again. Every change has exactly one event in the feed, and every
event reaches the receiver, signed."""

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from conftest import API_KEY, READ_API_KEY, variant_of
from helpers.fleet import copy_of_repository, instance
from helpers.live_server import REPO
from helpers.receiver import SECRET
from helpers.waiting import wait_until

from nomads_cluster.segmentation.interests import INTEREST_KEYS
from nomads_cluster.store.engine import create_store_engine
from nomads_cluster.store.registry import ModelRegistry
from nomads_cluster.store.tables import assignment_history, webhook_deliveries
from nomads_cluster.store.users import UserStore
from nomads_cluster.testing import WebhookReceiver

CITIES = ["Madrid", "Lisboa", "Porto", "Berlin", "Oslo"]


def body(i: int, rng: np.random.Generator) -> dict:
    chosen = {key: True for key in INTEREST_KEYS if rng.random() < 0.3}
    return {"_id": f"user-{i}", "interests": chosen, "city": CITIES[i % len(CITIES)]}


def call(port: int, method: str, path: str, data: dict | None = None, key: str = "") -> int:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    payload = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", payload, headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def feed(port: int) -> list[dict]:
    events, after = [], 0
    while True:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/events?after={after}&limit=1000",
            headers={"Authorization": f"Bearer {READ_API_KEY}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            page = json.loads(response.read())
        if not page["events"]:
            return events
        events += page["events"]
        after = page["next_after"]


def changes_in_history(store: UserStore) -> dict[str, list[tuple]]:
    """Per user, each change of (segment, room) their history records, in order."""
    query = sa.select(
        assignment_history.c.user_id, assignment_history.c.cluster, assignment_history.c.room_id
    ).order_by(assignment_history.c.id)
    changes: dict[str, list[tuple]] = defaultdict(list)
    last: dict[str, tuple] = {}
    for user_id, segment, room in store.run(lambda conn: conn.execute(query).all(), write=False):
        if last.get(user_id) != (segment, room):
            changes[user_id].append((segment, room))
        last[user_id] = (segment, room)
    return changes


def run_scenario(database_url: str, tmp_path: Path, committed) -> None:
    receiver = WebhookReceiver(SECRET)
    receiver.answers = [500, "timeout", "timeout", 503]
    receiver.hang_seconds = 2.5
    env = {
        **os.environ,
        "NOMADS_DATABASE_URL": database_url,
        "NOMADS_WEBHOOK_URL": receiver.url,
        "NOMADS_WEBHOOK_SECRET": SECRET,
        "NOMADS_WEBHOOK_TIMEOUT": "1",
        "NOMADS_API_KEY": API_KEY,
        "NOMADS_READ_API_KEY": READ_API_KEY,
    }
    copies = [copy_of_repository(tmp_path / name) for name in ("dyno-a", "dyno-b")]
    worker_command = [sys.executable, "-m", "nomads_cluster", "worker"]
    store = UserStore(create_store_engine(database_url, timeout=5))
    with ExitStack() as running, (tmp_path / "worker.log").open("w") as log:
        keys = {"NOMADS_API_KEY": API_KEY, "NOMADS_READ_API_KEY": READ_API_KEY}
        ports = [
            running.enter_context(instance(copy, database_url, tmp_path / f"{copy.name}.log", keys))
            for copy in copies
        ]
        worker = subprocess.Popen(worker_command, cwd=REPO, env=env, stdout=log, stderr=log)
        running.callback(lambda: (worker.terminate(), worker.wait(timeout=30)))
        rng = np.random.default_rng(3)
        bodies = [body(i, rng) for i in range(1000)]

        def post_all(share: list[dict], port: int) -> None:
            for one in share:
                assert call(port, "POST", "/cluster", one) == 200

        threads = [
            threading.Thread(target=post_all, args=(bodies[n::4], ports[n % 2])) for n in range(4)
        ]
        for thread in threads:
            thread.start()
        # The worker killed while its batch is in flight: the receiver answered the
        # first try with a 500 and hangs on the second.
        assert wait_until(lambda: receiver.requests >= 2, 60)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        worker = subprocess.Popen(worker_command, cwd=REPO, env=env, stdout=log, stderr=log)
        for thread in threads:
            thread.join()
        signed_up = feed(ports[0])
        assert wait_until(lambda: set(receiver.event_ids()) >= {e["id"] for e in signed_up}, 60)
        # The receiver goes down; 200 re-posts, half of them with other interests.
        receiver.down = True
        failed_before = delivery_state(store, receiver.url).failed_attempts
        reposts = [
            {**bodies[i], "interests": body(i, rng)["interests"]} if i % 2 else bodies[i]
            for i in range(0, 1000, 5)
        ]
        threads = [
            threading.Thread(target=post_all, args=(reposts[n::2], ports[n])) for n in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for i in range(3):  # erasures
            assert call(ports[i % 2], "DELETE", f"/users/user-{i}", key=API_KEY) == 204
        # A promotion, then reassign from the command line.
        registry = ModelRegistry(store)
        candidate = variant_of(committed, "c0ffee000001")
        registry.file(candidate, "tests")
        registry.promote(candidate.version, "tests")
        reassigned = subprocess.run(
            [sys.executable, "-m", "nomads_cluster", "reassign"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert reassigned.returncode == 0, reassigned.stderr
        assert wait_until(
            lambda: delivery_state(store, receiver.url).failed_attempts >= failed_before + 2, 30
        )
        receiver.down = False  # back: everything must arrive
        events = feed(ports[0])
        assert wait_until(lambda: set(receiver.event_ids()) >= {e["id"] for e in events}, 120)
        worker.terminate()
        worker.wait(timeout=30)

    assert receiver.bad_signatures == 0
    worker_log = (tmp_path / "worker.log").read_text()
    for failure in ("failed (HTTP 500)", "failed (TimeoutError", "failed (HTTP 503)"):
        assert failure in worker_log  # each way of failing was met, and got over
    assert sorted(set(receiver.event_ids())) == [e["id"] for e in events]
    # Every change exactly once: per user, the events are the history's changes.
    by_user: dict[str, list[tuple]] = defaultdict(list)
    for event in events:
        if event["type"] != "user.erased":
            by_user[event["user_id"]].append((event["segment"], event["room"]))
    erased = sorted(e["user_id"] for e in events if e["type"] == "user.erased")
    assert erased == ["user-0", "user-1", "user-2"]
    history = changes_in_history(store)
    for user_id in erased:  # their history is gone with them
        history.pop(user_id, None)
        by_user.pop(user_id)
    assert dict(by_user) == dict(history)
    assert any(e["source"] == "reassign" for e in events)
    assert sum(1 for e in events if e["type"] == "user.placed") == 1000
    receiver.close()
    store.engine.dispose()


def delivery_state(store: UserStore, url: str) -> sa.Row | None:
    query = sa.select(webhook_deliveries).where(webhook_deliveries.c.url == url)
    return store.run(lambda conn: conn.execute(query).first(), write=False)


def test_the_change_feed_on_postgresql(postgres_url, tmp_path, committed):
    run_scenario(postgres_url, tmp_path, committed)


def test_the_change_feed_on_one_sqlite_file(tmp_path, committed):
    run_scenario(f"sqlite:///{tmp_path / 'feed.sqlite3'}", tmp_path, committed)
