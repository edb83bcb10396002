"""The database going away and coming back: 503 with Retry-After, then recovery."""

import psycopg
import pytest
import sqlalchemy as sa
from conftest import READER
from helpers.tcp_proxy import TcpProxy

from nomads_cluster.store import engine as store_engine
from nomads_cluster.store.engine import StoreUnavailable, normalize_url
from nomads_cluster.store.migrations import upgrade
from nomads_cluster.store.records import Assignment
from nomads_cluster.store.users import UserStore

BODY = {"_id": "outage", "interests": {"surf": True}}


def assert_unavailable(response) -> None:
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert int(response.headers["Retry-After"]) > 0
    assert "nothing was stored" in response.get_json()["detail"]


def test_locked_sqlite_gives_503_then_recovers(config_for, make_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'locked.sqlite3'}"
    app = make_app(config_for(url, DATABASE_TIMEOUT=0.5))
    client = app.test_client()
    blocker = sa.create_engine(url).connect()
    blocker.exec_driver_sql("BEGIN EXCLUSIVE")  # another process holding the write lock
    response = client.post("/cluster", json=BODY)
    assert_unavailable(response)
    blocker.exec_driver_sql("ROLLBACK")
    blocker.close()
    assert client.post("/cluster", json=BODY).status_code == 200
    assert client.get("/users/outage", headers=READER).status_code == 200


@pytest.fixture
def proxied_postgres(postgres_url):
    """The test's PostgreSQL database reached through a proxy that can be cut."""
    url = normalize_url(postgres_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    proxy.down()


def test_postgres_going_away_gives_503_and_health_down_then_recovers(
    config_for, make_app, proxied_postgres
):
    proxy, url = proxied_postgres
    app = make_app(config_for(url))
    client = app.test_client()
    assert client.post("/cluster", json=BODY).status_code == 200

    proxy.down()
    response = client.post("/cluster", json={**BODY, "interests": {"coffee": True}})
    assert_unavailable(response)
    health = client.get("/health")
    assert health.status_code == 503
    assert health.get_json()["store"] == "down"

    proxy.up()
    response = client.post("/cluster", json={**BODY, "interests": {"coffee": True}})
    assert response.status_code == 200
    assert client.get("/health").get_json()["store"] == "ok"
    history = client.get("/users/outage/history", headers=READER).get_json()["history"]
    assert [entry["interests"] for entry in history] == [["coffee"], ["surf"]]


def _backend_pid(store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()


def _terminate(postgres_url: str, pid: int) -> None:
    url = normalize_url(postgres_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]


def test_a_connection_idle_long_enough_is_pinged_and_replaced_if_dead(postgres_url, monkeypatch):
    """A server restarted while the pool's connection sat idle: the ping before its
    use notices, and the write goes through on a new connection. A connection in steady
    use is not pinged: its write fails (a 503 for the request), the next one reconnects."""

    def user(user_id: str) -> Assignment:
        return Assignment(user_id=user_id, interests=(), cluster=1, scores={}, model_version="v")

    store = UserStore(store_engine.create_store_engine(postgres_url, timeout=5), timeout=5)
    upgrade(store.engine)
    try:
        monkeypatch.setattr(store_engine, "PING_AFTER_IDLE_SECONDS", 0)  # idle: pinged
        killed = _backend_pid(store)
        _terminate(postgres_url, killed)
        store.assignments.save([user("after-idle")])
        assert store.assignments.current("after-idle") is not None
        assert _backend_pid(store) != killed

        monkeypatch.setattr(store_engine, "PING_AFTER_IDLE_SECONDS", 3600)  # in use: not
        _terminate(postgres_url, _backend_pid(store))
        with pytest.raises(StoreUnavailable):
            store.assignments.save([user("lost-connection")])
        store.assignments.save([user("next")])
        assert store.assignments.current("next") is not None
        assert store.assignments.current("lost-connection") is None
    finally:
        store.engine.dispose()
