"""GET /events: the change feed for the app's back end (the read key), a page at a
time, followed by next_after; a cursor older than the events kept is a 410."""

from datetime import UTC, datetime, timedelta

from conftest import READER
from helpers.receiver import SECRET

from nomads_cluster.store.events import prune_events
from nomads_cluster.store.tables import user_events
from nomads_cluster.testing import WebhookReceiver
from nomads_cluster.worker.webhooks import WebhookDelivery


def sign_up(client, count: int) -> None:
    for i in range(count):
        body = {"_id": f"f{i}", "interests": {"surf": True}, "city": "Porto" if i % 2 else None}
        assert client.post("/cluster", json={k: v for k, v in body.items() if v}).status_code == 200


def test_the_feed_needs_the_read_key(client):
    assert client.get("/events").status_code == 401


def test_a_reader_following_next_after_sees_each_event_once(client):
    sign_up(client, 5)
    seen, after = [], 0
    while True:
        page = client.get(f"/events?after={after}&limit=2", headers=READER).get_json()
        seen += page["events"]
        if not page["events"]:
            assert page["next_after"] == after
            break
        after = page["next_after"]
        assert after == page["events"][-1]["id"]
    assert [e["user_id"] for e in seen] == [f"f{i}" for i in range(5)]
    assert {e["type"] for e in seen} == {"user.placed"}
    assert [e["room"] is not None for e in seen] == [False, True, False, True, False]
    assert seen == client.get("/events", headers=READER).get_json()["events"]


def test_a_bad_cursor_is_a_400_and_a_pruned_one_a_410(client, store):
    assert client.get("/events?after=-1", headers=READER).status_code == 400
    assert client.get("/events?limit=0", headers=READER).status_code == 400
    sign_up(client, 2)
    first = client.get("/events", headers=READER).get_json()["events"][0]["id"]
    with store.engine.begin() as conn:
        old = datetime.now(UTC) - timedelta(days=30)
        conn.execute(user_events.update().where(user_events.c.id == first).values(occurred_at=old))
    store.run(lambda conn: prune_events(conn, timedelta(days=7)), write=True)
    gone = client.get("/events?after=0", headers=READER)
    assert gone.status_code == 410
    assert gone.mimetype == "application/problem+json"
    assert "GET /rooms/<id>/members" in gone.get_json()["detail"]
    assert f"after={first}" in gone.get_json()["detail"]
    kept = client.get("/events", headers=READER).get_json()  # from the oldest kept
    assert [e["user_id"] for e in kept["events"]] == ["f1"]


def test_metrics_give_the_feed_and_its_deliveries(client, store):
    sign_up(client, 3)
    receiver = WebhookReceiver(SECRET)
    try:
        delivery = WebhookDelivery(store, receiver.url, SECRET)
        delivery.step()
    finally:
        receiver.close()
    text = client.get("/metrics").get_data(as_text=True)
    last = client.get("/events", headers=READER).get_json()["events"][-1]["id"]
    assert f"nomads_events_last_id {float(last)}" in text
    assert f'nomads_webhook_delivered_events{{url="{receiver.url}"}} 3.0' in text
    assert f'nomads_webhook_oldest_undelivered_seconds{{url="{receiver.url}"}} 0.0' in text
