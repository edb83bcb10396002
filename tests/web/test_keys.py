"""Bearer keys: the read key reads stored users, the admin key also erases."""

import hmac

import pytest
from conftest import API_KEY, READ_API_KEY, bearer

BODY = {"_id": "k1", "interests": {"surf": True}}
READS = ["/users/k1", "/users/k1/history", "/users/k1/similar"]


@pytest.fixture
def stored_client(client):
    assert client.post("/cluster", json=BODY).status_code == 200
    return client


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize("key", [READ_API_KEY, API_KEY])
def test_the_read_key_and_the_admin_key_read_a_stored_user(stored_client, path, key):
    response = stored_client.get(path, headers=bearer(key))
    assert response.status_code == 200
    assert response.get_json()["_id"] == "k1"


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong-key-0123456789"), {"Authorization": READ_API_KEY}, bearer("")],
    ids=["none", "wrong", "no-scheme", "empty"],
)
def test_reading_a_user_without_a_key_is_a_401_that_names_the_keys(stored_client, path, headers):
    response = stored_client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    detail = response.get_json()["detail"]
    assert "NOMADS_READ_API_KEY" in detail and "NOMADS_API_KEY" in detail
    assert "surf" not in response.get_data(as_text=True)


def test_the_read_key_cannot_erase(stored_client):
    assert stored_client.delete("/users/k1", headers=bearer(READ_API_KEY)).status_code == 401
    assert stored_client.get("/users/k1", headers=bearer(READ_API_KEY)).status_code == 200


def test_the_apps_contract_needs_no_key(client):
    assert client.post("/cluster", json=BODY).status_code == 200
    assert client.post("/cluster/preview", json=BODY).status_code == 200
    assert client.get("/clusters").status_code == 200
    assert client.get("/health").status_code == 200


def test_without_any_key_configured_reads_are_turned_off(make_app, config_for, database_url):
    client = make_app(config_for(database_url, API_KEY=None, READ_API_KEY=None)).test_client()
    assert client.post("/cluster", json=BODY).status_code == 200
    response = client.get("/users/k1", headers=bearer(READ_API_KEY))
    assert response.status_code == 403
    detail = response.get_json()["detail"]
    assert "this server has no NOMADS_READ_API_KEY or NOMADS_API_KEY" in detail


def test_with_only_the_admin_key_it_reads(make_app, config_for, database_url):
    client = make_app(config_for(database_url, READ_API_KEY=None)).test_client()
    assert client.post("/cluster", json=BODY).status_code == 200
    assert client.get("/users/k1", headers=bearer(API_KEY)).status_code == 200
    assert client.get("/users/k1", headers=bearer(READ_API_KEY)).status_code == 401


def test_every_configured_key_is_compared_in_constant_time(stored_client, monkeypatch):
    """hmac.compare_digest against each key, even once one has matched: neither the
    answer's time nor the work done tells which key a token was close to."""
    compared, compare_digest = [], hmac.compare_digest

    def recording_compare(given: bytes, key: bytes) -> bool:
        compared.append(key)
        return compare_digest(given, key)

    monkeypatch.setattr("nomads_cluster.web.keys.hmac.compare_digest", recording_compare)
    for token in (READ_API_KEY, API_KEY, "wrong-key-0123456789"):
        compared.clear()
        stored_client.get("/users/k1", headers=bearer(token))
        assert sorted(compared) == sorted([READ_API_KEY.encode(), API_KEY.encode()])
