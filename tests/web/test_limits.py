"""Rate limiting per client, off by default; the client's address behind proxies."""

import pytest

from nomads_cluster import ConfigError, create_app


@pytest.fixture
def limited(make_app, config_for, tmp_path):
    def make(**settings):
        config = config_for(f"sqlite:///{tmp_path}/db.sqlite3", **settings)
        return make_app(config).test_client()

    return make


def test_no_limit_by_default(client):
    statuses = {client.get("/clusters").status_code for _ in range(50)}
    assert statuses == {200}


def test_over_the_limit_is_a_429_problem_with_retry_after(limited):
    client = limited(RATE_LIMIT="3/minute")
    assert [client.get("/clusters").status_code for _ in range(3)] == [200] * 3
    refused = client.get("/clusters")
    assert refused.status_code == 429
    assert refused.mimetype == "application/problem+json"
    assert refused.get_json()["status"] == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.headers["X-RateLimit-Limit"] == "3"


def test_health_and_metrics_are_never_limited(limited):
    client = limited(RATE_LIMIT="1/minute")
    assert {client.get("/health").status_code for _ in range(5)} == {200}
    assert {client.get("/metrics").status_code for _ in range(5)} == {200}


def test_clients_are_counted_apart_behind_a_trusted_proxy(limited):
    client = limited(RATE_LIMIT="2/minute", TRUSTED_PROXIES=1)

    def get(address: str) -> int:
        return client.get("/clusters", headers={"X-Forwarded-For": address}).status_code

    assert [get("203.0.113.1") for _ in range(3)] == [200, 200, 429]
    assert get("203.0.113.2") == 200  # another client, its own count


def test_without_trusted_proxies_the_forwarded_address_is_ignored(limited):
    client = limited(RATE_LIMIT="2/minute")
    statuses = [
        client.get("/clusters", headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code
        for n in range(3)
    ]
    assert statuses == [200, 200, 429]  # a client cannot escape by inventing addresses


def test_a_wrong_limit_is_refused_at_start_up(monkeypatch, tmp_path):
    monkeypatch.setenv("NOMADS_DATABASE_URL", f"sqlite:///{tmp_path}/db.sqlite3")
    monkeypatch.setenv("NOMADS_RATE_LIMIT", "lots")
    with pytest.raises(ConfigError, match="NOMADS_RATE_LIMIT: 'lots' is not a rate"):
        create_app()
