"""Webhook deliveries against a real receiver: signed, in order, in batches; retried
while the receiver fails or times out; stopped by 410 Gone; and where delivery stands
kept in the database, so that a worker killed mid-batch and started again loses
nothing."""

import logging
import os
import signal
import subprocess
import sys

import pytest
import sqlalchemy as sa
from conftest import READER
from helpers.live_server import REPO
from helpers.receiver import SECRET
from helpers.waiting import wait_until

from nomads_cluster.store.records import Assignment
from nomads_cluster.store.tables import webhook_deliveries
from nomads_cluster.testing import WebhookReceiver
from nomads_cluster.worker import webhooks
from nomads_cluster.worker.webhooks import WebhookDelivery


@pytest.fixture
def receiver():
    receiver = WebhookReceiver(SECRET)
    yield receiver
    receiver.close()


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(webhooks, "FIRST_RETRY_SECONDS", 0.01)


def sign_up(store, count: int, start: int = 0) -> None:
    """``count`` new users, two in three of them in Madrid."""
    store.assignments.save([user(i) for i in range(start, start + count)])


def user(i: int) -> Assignment:
    city = "Madrid" if i % 3 else None
    return Assignment(f"u{i}", ("surf",), 1 + i % 4, {}, "v1", city=city)


def stored_ids(client) -> list[int]:
    page = client.get("/events?after=0&limit=1000", headers=READER).get_json()
    return [event["id"] for event in page["events"]]


def deliver_all(delivery: WebhookDelivery, steps: int = 200) -> None:
    """Step until the worker has nothing left to send now (or is stopped)."""
    for _ in range(steps):
        if delivery.step() > 0 and not delivery.state().sending_through:
            return


def test_events_arrive_signed_in_order_in_batches(store, client, receiver):
    sign_up(store, 25)
    delivery = WebhookDelivery(store, receiver.url, SECRET, batch_size=10)
    deliver_all(delivery)
    assert receiver.event_ids() == stored_ids(client)
    assert [len(events) for _, events, _ in receiver.deliveries] == [10, 10, 5]
    first_id, events, _ = receiver.deliveries[0]
    assert first_id == f"evt_{events[0]['id']}_{events[-1]['id']}"
    assert receiver.bad_signatures == 0


def test_a_failing_then_slow_receiver_gets_the_same_batch_again_then_the_rest(
    store, client, receiver, fast_retries, caplog
):
    sign_up(store, 12)
    receiver.answers = [500, 503, "timeout"]
    receiver.hang_seconds = 1.0
    delivery = WebhookDelivery(store, receiver.url, SECRET, batch_size=5, timeout=0.3)
    with caplog.at_level(logging.WARNING, logger="nomads_cluster.worker.webhooks"):
        deliver_all(delivery)
    assert receiver.event_ids() == stored_ids(client)  # each once, in order
    assert "failed (HTTP 500), try 1" in caplog.text and "try 3" in caplog.text
    assert delivery.state().failed_attempts == 3


def test_410_gone_stops_deliveries_with_a_clear_line(store, receiver, caplog):
    sign_up(store, 3)
    receiver.answers = [410]
    delivery = WebhookDelivery(store, receiver.url, SECRET)
    with caplog.at_level(logging.ERROR, logger="nomads_cluster.worker.webhooks"):
        delivery.step()
        delivery.step()
    assert f"webhook deliveries to {receiver.url} stop: the receiver answered 410 Gone" in (
        caplog.text
    )
    assert receiver.deliveries == [] and delivery.state().stopped_at is not None


def test_a_killed_worker_loses_nothing_and_resends_at_most_its_batch(
    store, client, receiver, database_url, tmp_path
):
    """The worker process killed (SIGKILL) while the receiver holds its batch; started
    again, it sends that batch again and the rest."""
    sign_up(store, 30)
    receiver.answers = ["timeout"]
    receiver.hang_seconds = 1.5
    env = {
        **os.environ,
        "NOMADS_DATABASE_URL": database_url,
        "NOMADS_WEBHOOK_URL": receiver.url,
        "NOMADS_WEBHOOK_SECRET": SECRET,
        "NOMADS_WEBHOOK_BATCH_SIZE": "10",
        "NOMADS_WEBHOOK_TIMEOUT": "2",
    }
    command = [sys.executable, "-m", "nomads_cluster", "worker"]
    with (tmp_path / "worker.log").open("w") as log:
        first = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
        assert wait_until(lambda: store_sending(store, receiver.url) is not None)
        first.send_signal(signal.SIGKILL)  # mid-batch: the receiver has not answered
        first.wait()
        second = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
        try:
            # The dead worker's lease runs out first; then everything arrives.
            assert wait_until(lambda: set(receiver.event_ids()) == set(stored_ids(client)), 60)
        finally:
            second.terminate()
            second.wait(timeout=30)
    ids = receiver.event_ids()
    assert sorted(set(ids)) == stored_ids(client)
    assert len(ids) - len(set(ids)) <= 10  # at most the batch in flight, twice


def store_sending(store, url: str) -> int | None:
    query = sa.select(webhook_deliveries.c.sending_through).where(webhook_deliveries.c.url == url)
    return store.run(lambda conn: conn.execute(query).scalar(), write=False)
