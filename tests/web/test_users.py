"""The stored users over HTTP: /users/<id>, its history, erasure, and /cluster/batch."""

import json

import pytest
import sqlalchemy as sa
from conftest import API_KEY, READER

from nomads_cluster.schemas import BATCH_LIMIT
from nomads_cluster.store.tables import assignment_history, assignments

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def assign(client, user_id, **interests):
    response = client.post("/cluster", json={"_id": user_id, "interests": interests})
    assert response.status_code == 200
    return response.get_json()


def count_rows(store, table, user_id: str) -> int:
    with store.engine.connect() as conn:
        query = sa.select(sa.func.count()).where(table.c.user_id == user_id)
        return conn.execute(query).scalar_one()


def test_every_answered_assignment_is_stored(client):
    answer = assign(client, "u1", surf=True, coffee=True)
    stored = client.get("/users/u1", headers=READER).get_json()
    assert stored["_id"] == "u1"
    assert stored["cluster"] == answer["cluster"]
    assert stored["scores"] == answer["scores"]
    assert stored["model_version"] == answer["model_version"]
    assert stored["interests"] == ["surf", "coffee"]
    assert stored["source"] == "api"


def test_integer_ids_come_back_as_integers(client):
    assign(client, 42, parks=True)
    assert client.get("/users/42", headers=READER).get_json()["_id"] == 42


def test_posting_again_replaces_the_assignment_and_adds_to_history(client):
    first = assign(client, "u2", surf=True)
    second = assign(client, "u2", theaters=True, museums=True)
    assert client.get("/users/u2", headers=READER).get_json()["cluster"] == second["cluster"]
    history = client.get("/users/u2/history", headers=READER).get_json()
    assert history["_id"] == "u2"
    assert [entry["interests"] for entry in history["history"]] == [
        ["museums", "theaters"],
        ["surf"],
    ]
    assert [entry["cluster"] for entry in history["history"]] == [
        second["cluster"],
        first["cluster"],
    ]
    latest = client.get("/users/u2/history?limit=1", headers=READER).get_json()["history"]
    assert [entry["interests"] for entry in latest] == [["museums", "theaters"]]


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1001"])
def test_history_limit_out_of_range_is_a_400(client, limit):
    assign(client, "u3", surf=True)
    response = client.get(f"/users/u3/history?limit={limit}", headers=READER)
    assert response.status_code == 400
    assert "limit must be an integer from 1 to 1000" in response.get_json()["detail"]


@pytest.mark.parametrize("path", ["/users/nobody", "/users/nobody/history"])
def test_unknown_user_is_a_404_problem(client, path):
    response = client.get(path, headers=READER)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert "nobody" in response.get_json()["detail"]


@pytest.mark.parametrize("user_id", ["nobody", "x" * 300, "nul%00"])
def test_an_unknown_and_an_unstorable_id_get_the_same_problem(client, user_id):
    for path in (f"/users/{user_id}", f"/users/{user_id}/similar"):
        response = client.get(path, headers=READER)
        assert response.status_code == 404
        problem = response.get_json()
        assert problem["title"] == "Unknown user"
        assert problem["detail"].startswith("no assignment is stored for user")
        assert response.headers["X-Request-ID"]


@pytest.mark.parametrize("user_id", ["nobody", "x" * 300])
def test_the_key_is_checked_before_whether_the_user_exists(client, user_id):
    response = client.get(f"/users/{user_id}")
    assert response.status_code == 401
    assert client.delete(f"/users/{user_id}", headers=READER).status_code == 401


def test_erasure_needs_the_api_key(client):
    assign(client, "u4", surf=True)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        response = client.delete("/users/u4", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/users/u4", headers=READER).status_code == 200


def test_erasure_leaves_nothing_behind(client, store):
    assign(client, "u5", surf=True)
    assign(client, "u5", coffee=True)
    assign(client, "other", coffee=True)
    response = client.delete("/users/u5", headers=AUTH)
    assert response.status_code == 204
    assert response.data == b""
    assert count_rows(store, assignments, "u5") == 0
    assert count_rows(store, assignment_history, "u5") == 0
    assert client.get("/users/u5", headers=READER).status_code == 404
    assert client.get("/users/u5/history", headers=READER).status_code == 404
    assert client.get("/users/other", headers=READER).status_code == 200
    assert client.delete("/users/u5", headers=AUTH).status_code == 404


def test_erasure_is_off_without_an_api_key(config_for, database_url, make_app):
    client = make_app(config_for(database_url, API_KEY=None)).test_client()
    assign(client, "u6", surf=True)
    response = client.delete("/users/u6", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403
    assert "NOMADS_API_KEY" in response.get_json()["detail"]
    assert client.get("/users/u6", headers=READER).status_code == 200


def test_batch_answers_each_user_in_order_and_stores_them(client):
    users = [
        {"_id": f"b{i}", "interests": {"surf": i % 2 == 0, "museums": i % 3 == 0}} for i in range(5)
    ]
    response = client.post("/cluster/batch", json={"users": users})
    assert response.status_code == 200
    body = response.get_json()
    assert (body["assigned"], body["failed"]) == (5, 0)
    for user, result in zip(users, body["results"], strict=True):
        single = client.post("/cluster", json=user).get_json()
        assert result["status"] == 200
        assert result["_id"] == user["_id"]
        assert result["cluster"] == single["cluster"]
        assert result["scores"] == pytest.approx(single["scores"], rel=1e-12, abs=1e-15)
        history = client.get(f"/users/{user['_id']}/history", headers=READER).get_json()["history"]
        assert [entry["source"] for entry in history] == ["api", "batch"]


def test_batch_item_errors_do_not_sink_the_others(client):
    users = [
        {"_id": "ok1", "interests": {"surf": True}},
        {"_id": "bad1", "interests": {"surfing": True}},
        "not an object",
        {"interests": {"coffee": 2}},
        {"_id": "ok2", "interests": {}},
    ]
    body = client.post("/cluster/batch", json={"users": users}).get_json()
    assert (body["assigned"], body["failed"]) == (2, 3)
    assert [r["status"] for r in body["results"]] == [200, 422, 422, 422, 200]
    assert [r["_id"] for r in body["results"]] == ["ok1", "bad1", None, None, "ok2"]
    assert body["results"][1]["errors"][0]["pointer"] == "#/users/1/interests/surfing"
    assert body["results"][2]["errors"] == [
        {"pointer": "#/users/2", "detail": "must be a JSON object"}
    ]
    pointers = {e["pointer"] for e in body["results"][3]["errors"]}
    assert pointers == {"#/users/3/_id", "#/users/3/interests/coffee"}
    assert client.get("/users/ok1", headers=READER).status_code == 200
    assert client.get("/users/ok2", headers=READER).status_code == 200
    assert client.get("/users/bad1", headers=READER).status_code == 404


def test_batch_of_the_documented_limit_is_accepted(client, store):
    users = [
        {"_id": i, "interests": {"surf": True, "coffee": True, "parks": False}}
        for i in range(BATCH_LIMIT)
    ]
    raw = json.dumps({"users": users})
    assert len(raw) > 16 * 1024  # above /cluster's own body limit
    response = client.post("/cluster/batch", data=raw)
    assert response.status_code == 200
    assert response.get_json()["assigned"] == BATCH_LIMIT
    assert count_rows(store, assignments, str(BATCH_LIMIT - 1)) == 1


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"users": [{"_id": 1, "interests": {}}] * (BATCH_LIMIT + 1)}, "#/users"),
        ({"users": []}, "#/users"),
        ({"people": []}, "#/users"),
        ([], "#"),
    ],
)
def test_batch_body_errors_are_422(client, body, pointer):
    response = client.post("/cluster/batch", json=body)
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["pointer"] == pointer


def test_batch_body_over_its_limit_is_a_413(client, app):
    raw = b'{"users": [' + b" " * app.config["BATCH_MAX_CONTENT_LENGTH"] + b"]}"
    response = client.post("/cluster/batch", data=raw)
    assert response.status_code == 413
    assert str(app.config["BATCH_MAX_CONTENT_LENGTH"]) in response.get_json()["detail"]


def test_batch_is_one_transaction(client, store):
    """A failure while writing stores nothing of the batch: 503, and no partial history."""

    def fail_on_upsert(conn, cursor, statement, parameters, context, executemany):
        if "INSERT INTO assignments " in statement:  # making the users current
            raise sa.exc.OperationalError(statement, parameters, Exception("disk I/O error"))

    sa.event.listen(store.engine, "before_cursor_execute", fail_on_upsert)
    users = [{"_id": f"t{i}", "interests": {"surf": True}} for i in range(3)]
    response = client.post("/cluster/batch", json={"users": users})
    sa.event.remove(store.engine, "before_cursor_execute", fail_on_upsert)
    assert response.status_code == 503
    assert all(count_rows(store, assignment_history, f"t{i}") == 0 for i in range(3))


UNSTORABLE_IDS = {
    "NUL": "a\x00b",
    "257 characters": "x" * 257,
    "257-digit integer": 10**256,
    "257-character negative integer": -(10**255),
}


@pytest.mark.parametrize("user_id", UNSTORABLE_IDS.values(), ids=UNSTORABLE_IDS.keys())
def test_an_id_no_database_can_hold_is_a_422_on_each_database(client, user_id):
    response = client.post("/cluster", json={"_id": user_id, "interests": {"surf": True}})
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["pointer"] == "#/_id"


@pytest.mark.parametrize("user_id", [10**255, -(10**255 - 1), "y" * 256])
def test_ids_of_256_characters_are_stored(client, user_id):
    response = client.post("/cluster", json={"_id": user_id, "interests": {"surf": True}})
    assert response.status_code == 200
    stored = client.get(f"/users/{user_id}", headers=READER).get_json()
    assert stored["_id"] == user_id


def test_an_unstorable_id_in_a_batch_fails_alone(client):
    users = [{"_id": user_id, "interests": {"surf": True}} for user_id in UNSTORABLE_IDS.values()]
    users.append({"_id": "fine", "interests": {"surf": True}})
    response = client.post("/cluster/batch", json={"users": users})
    assert response.status_code == 200
    body = response.get_json()
    assert (body["assigned"], body["failed"]) == (1, len(UNSTORABLE_IDS))
    assert client.get("/users/fine", headers=READER).status_code == 200


@pytest.mark.parametrize("path", ["/users/%00", "/users/a%00b/history", "/users/" + "z" * 257])
def test_looking_up_an_unstorable_id_is_a_404(client, path):
    assert client.get(path, headers=READER).status_code == 404
    assert client.delete(path.removesuffix("/history"), headers=AUTH).status_code == 404


def test_a_batch_of_bad_items_gets_an_answer_no_larger_than_its_body(client, app):
    """Every item naming many unknown interests: each item's answer says its first error
    and how many more; errors are listed ten an item, a hundred in all, and the valid
    interests never per item."""
    junk = {f"unknown{n}": True for n in range(50)}
    users = [{"_id": n, "interests": junk} for n in range(BATCH_LIMIT)]
    body = json.dumps({"users": users}).encode()
    assert len(body) <= app.config["BATCH_MAX_CONTENT_LENGTH"]
    response = client.post("/cluster/batch", data=body)
    assert response.status_code == 200
    assert len(response.get_data()) <= len(body)
    results = response.get_json()["results"]
    assert [len(result["errors"]) for result in results[:11]] == [10] * 10 + [0]
    assert sum(len(result["errors"]) for result in results) == 100
    assert (
        results[0]["detail"]
        == "#/users/0/interests/unknown0 unknown interest 'unknown0'; and 49 more"
    )
    assert "valid interests" not in response.get_data(as_text=True)
