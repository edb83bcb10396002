"""Each worker serves the registry's version: it follows promotions and rollbacks by
itself, refuses a version it cannot load while it keeps serving, and scores a shadowed
candidate beside the served model without changing an answer."""

import json
import logging
import threading
from datetime import UTC, datetime

from conftest import variant_of
from helpers.tcp_proxy import TcpProxy
from helpers.waiting import wait_until

from nomads_cluster.segmentation.interests import encode_interests
from nomads_cluster.store.engine import normalize_url
from nomads_cluster.store.registry import ModelRegistry, parameters_sha256
from nomads_cluster.store.tables import model_promotions, model_versions

BODY = {"_id": "u1", "interests": {"surf": True, "coffee": True, "museums": True}}


def served_version(client) -> str:
    return client.post("/cluster/preview", json=BODY).get_json()["model_version"]


def test_a_worker_follows_promotions_and_rollbacks(make_app, config_for, database_url, committed):
    """On PostgreSQL with a poll every minute: the notification does it; on SQLite the
    poll, every 0.2 s."""
    check = 60 if database_url.startswith("postgresql") else 0.2
    app = make_app(config_for(database_url, MODEL_CHECK_SECONDS=check))
    client = app.test_client()
    registry = app.extensions["model_registry"]
    candidate = variant_of(committed, "c0ffee000001")
    registry.file(candidate, "tests")
    assert served_version(client) == committed.version
    registry.promote(candidate.version, "tests")
    assert wait_until(lambda: served_version(client) == candidate.version)
    assert client.get("/version").get_json()["version"] == candidate.version
    assert client.get("/health").get_json()["model_version"] == candidate.version
    answer = client.post("/cluster", json=BODY).get_json()
    assert answer["cluster"] == candidate.assign_user(encode_interests(BODY["interests"]))[0]
    registry.rollback("tests")
    assert wait_until(lambda: served_version(client) == committed.version)


def test_a_version_that_cannot_be_loaded_here_is_refused_and_the_old_one_served(
    make_app, config_for, database_url, committed, caplog
):
    """A version filed by newer code (an algorithm this code does not serve), promoted
    around this code's checks: this instance keeps its model and says so."""
    app = make_app(config_for(database_url, MODEL_CHECK_SECONDS=0.2))
    client = app.test_client()
    card = json.loads(committed.card.model_dump_json(exclude_unset=True))
    card.update(version="f00df00df00d", algorithm="sklearn.mixture.GaussianMixture")
    profiles = committed.profiles.tolist()
    store = app.extensions["user_store"]
    with store.engine.begin() as conn:
        now = datetime.now(UTC)
        conn.execute(
            model_versions.insert().values(
                version="f00df00df00d",
                card=card,
                profiles=profiles,
                parameters_sha256=parameters_sha256(card, profiles),
                filed_by="newer code",
                filed_at=now,
            )
        )
        conn.execute(
            model_promotions.insert().values(
                version="f00df00df00d",
                previous=committed.version,
                action="promote",
                promoted_by="newer code",
                promoted_at=now,
            )
        )
    follower = app.extensions["model_follower"]
    with caplog.at_level(logging.ERROR, logger="nomads_cluster.web.served_model"):
        assert served_version(client) == committed.version  # starts the follower
        assert wait_until(lambda: follower.refused is not None)
    assert served_version(client) == committed.version
    assert (
        f"refusing model f00df00df00d promoted in the registry, still serving {committed.version}"
        in caplog.text
    )
    health = client.get("/health")
    assert health.status_code == 200
    assert health.get_json()["status"] == "degraded"
    assert "the registry serves f00df00df00d, refused here" in health.get_json()["model_detail"]


def test_a_shadowed_candidate_is_counted_and_never_changes_an_answer(
    make_app, config_for, database_url, committed
):
    app = make_app(config_for(database_url, MODEL_CHECK_SECONDS=0.2))
    client = app.test_client()
    registry = app.extensions["model_registry"]
    candidate = variant_of(committed, "c0ffee000001")
    registry.file(candidate, "tests")
    assert served_version(client) == committed.version  # the follower starts
    registry.start_shadow(candidate.version)
    follower = app.extensions["model_follower"]
    assert wait_until(lambda: follower.shadow is not None)
    chosen = [("surf",), ("museums", "theaters"), ("drinks",)]
    users = [
        {"_id": f"s{i}", "interests": dict.fromkeys(keys, True)} for i, keys in enumerate(chosen)
    ]
    answers = [client.post("/cluster", json=user).get_json() for user in users]
    batch = client.post("/cluster/batch", json={"users": users}).get_json()
    for user, answer, item in zip(users, answers, batch["results"], strict=True):
        expected, _ = committed.assign_user(encode_interests(user["interests"]))
        assert answer["cluster"] == item["cluster"] == expected
        assert answer["model_version"] == committed.version
    expected_pairs = {}
    for user in users * 2:  # each user once by /cluster, once in the batch
        features = encode_interests(user["interests"])
        pair = (committed.assign_user(features)[0], candidate.assign_user(features)[0])
        expected_pairs[pair] = expected_pairs.get(pair, 0) + 1
    assert wait_until(lambda: dict(registry.agreement(candidate.version).pairs) == expected_pairs)
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'nomads_shadow_answers_total{{agreed="no",shadow_version="{candidate.version}"}}' in (
        metrics
    )
    registry.stop_shadow()
    assert wait_until(lambda: follower.shadow is None)


def test_with_the_notification_link_cut_the_worker_still_follows_by_polling(
    make_app, config_for, postgres_url, committed, caplog
):
    url = normalize_url(postgres_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    try:
        app = make_app(config_for(proxied, MODEL_CHECK_SECONDS=0.5))
        client = app.test_client()
        direct = ModelRegistry(make_app(config_for(postgres_url)).extensions["user_store"])
        candidate = variant_of(committed, "c0ffee000001")
        direct.file(candidate, "tests")
        assert served_version(client) == committed.version  # the follower listens
        with caplog.at_level(logging.WARNING, logger="nomads_cluster.web.served_model"):
            proxy.down()  # the listening connection dropped, none taken meanwhile
            direct.promote(candidate.version, "tests")  # its notification is lost
            assert wait_until(lambda: "model notifications interrupted" in caplog.text)
            proxy.up()
            assert wait_until(lambda: served_version(client) == candidate.version)
    finally:
        proxy.down()


def test_stopping_the_follower_waits_for_it_so_no_connection_outlives_the_app(
    make_app, config_for, database_url, committed
):
    """A check under way when the app closes would give its connection back to a pool
    already disposed, where nothing closes it: stop() returns once the thread ended,
    even in the middle of a long wait for notifications."""
    running_before = set(threading.enumerate())
    app = make_app(config_for(database_url, MODEL_CHECK_SECONDS=60))
    client = app.test_client()
    registry = app.extensions["model_registry"]
    registry.file(variant_of(committed, "c0ffee000001"), "tests")
    assert served_version(client) == committed.version  # the follower starts
    registry.promote("c0ffee000001", "tests")  # a check under way, or soon
    app.extensions["model_follower"].stop()
    followers = [t for t in threading.enumerate() if t.name == "model-follower"]
    assert [t for t in followers if t not in running_before] == []
    assert app.extensions["user_store"].engine.pool.checkedout() == 0
