"""Cities and rooms over HTTP: the room in /cluster's answer, /rooms (open) and a room's
members (read key), and /users/<id>/similar (read key)."""

import pytest
from conftest import API_KEY, READER, bearer

from nomads_cluster.cities import MAX_CITY_LENGTH


def sign_up(client, user_id, city=None, path="/cluster", **interests):
    body = {"_id": user_id, "interests": interests or {"surf": True}}
    if city is not None:
        body["city"] = city
    response = client.post(path, json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_a_body_without_a_city_gets_the_same_answer_as_before(client):
    answer = sign_up(client, "u1")
    assert "room" not in answer and "city" not in answer
    stored = client.get("/users/u1", headers=READER).get_json()
    assert stored["city"] is None and stored["room_id"] is None


def test_an_answer_with_a_city_names_the_room_and_the_store_remembers_it(client):
    answer = sign_up(client, "u1", city="  Madrid ")
    segment = answer["cluster"]
    assert answer["room"] == {"id": f"madrid-{segment}", "city": "Madrid", "segment": segment}
    stored = client.get("/users/u1", headers=READER).get_json()
    assert (stored["city"], stored["room_id"]) == ("Madrid", f"madrid-{segment}")
    again = sign_up(client, "u2", city="MADRID")  # same interests, same segment
    assert again["room"] == answer["room"]  # named as its first member wrote it


@pytest.mark.parametrize(
    "city, detail",
    [
        ("", f"must be a string of 1 to {MAX_CITY_LENGTH} characters"),
        ("x" * (MAX_CITY_LENGTH + 1), f"must be a string of 1 to {MAX_CITY_LENGTH} characters"),
        (42, f"must be a string of 1 to {MAX_CITY_LENGTH} characters"),
        ("   ", "must hold something besides spaces, and no control character"),
        ("Mad\nrid", "must hold something besides spaces, and no control character"),
        ("Oslo\x00", "must hold something besides spaces, and no control character"),
    ],
)
def test_a_bad_city_is_a_422_that_says_where(client, city, detail):
    response = client.post("/cluster", json={"_id": "u", "interests": {}, "city": city})
    assert response.status_code == 422
    (error,) = response.get_json()["errors"]
    assert error["pointer"] == "#/city" and detail in error["detail"]
    assert client.get("/users/u", headers=READER).status_code == 404  # nothing stored


def test_preview_names_the_room_a_city_would_give_and_stores_nothing(
    make_app, config_for, database_url
):
    client = make_app(config_for(database_url, ROOM_SIZE=1)).test_client()
    preview = sign_up(client, "p", city="Lisboa", path="/cluster/preview")
    segment = preview["cluster"]
    assert preview["room"] == {"id": f"lisboa-{segment}", "city": "Lisboa", "segment": segment}
    assert sign_up(client, "first", city="lisboa")["room"]["id"] == f"lisboa-{segment}"
    # That room is full now (rooms of 1): the preview points at the next one.
    assert sign_up(client, "p", city="Lisboa", path="/cluster/preview")["room"]["id"] == (
        f"lisboa-{segment}-2"
    )
    assert client.get("/users/p", headers=READER).status_code == 404


def test_a_batch_gives_each_user_with_a_city_their_room(client):
    users = [
        {"_id": 1, "interests": {"surf": True}, "city": "Paris"},
        {"_id": 2, "interests": {"surf": True}},
        {"_id": 3, "interests": {"surf": True}, "city": ""},
    ]
    answer = client.post("/cluster/batch", json={"users": users}, headers=bearer(API_KEY))
    first, second, third = answer.get_json()["results"]
    assert first["room"]["id"] == f"paris-{first['cluster']}"
    assert "room" not in second
    assert third["status"] == 422 and third["errors"][0]["pointer"] == "#/users/2/city"


def test_rooms_list_member_counts_without_a_key(client):
    segment = sign_up(client, "a", city="Paris")["cluster"]
    sign_up(client, "b", city="paris")
    sign_up(client, "c", city="Roma")
    listed = client.get("/rooms?city=PARIS").get_json()
    assert listed == {
        "rooms": [{"id": f"paris-{segment}", "city": "Paris", "segment": segment, "members": 2}],
        "next": None,
    }
    assert [r["id"] for r in client.get("/rooms").get_json()["rooms"]] == [
        f"paris-{segment}",
        f"roma-{segment}",
    ]
    assert "_id" not in client.get("/rooms").get_data(as_text=True)  # counts, not people


def test_rooms_come_a_page_at_a_time(client):
    for i, city in enumerate(["Aa", "Bb", "Cc"]):
        sign_up(client, i, city=city)
    first = client.get("/rooms?limit=2").get_json()
    second = client.get(f"/rooms?limit=2&after={first['next']}").get_json()
    assert len(first["rooms"]) == 2 and len(second["rooms"]) == 1 and second["next"] is None


@pytest.mark.parametrize("query", ["city=%20", "city=a%0Ab", "limit=0", "limit=x"])
def test_a_bad_rooms_query_is_a_400(client, query):
    response = client.get(f"/rooms?{query}")
    assert response.status_code == 400
    assert response.get_json()["title"] == "Invalid query parameter"


def test_a_rooms_members_need_a_read_key(client):
    segment = sign_up(client, "m1", city="Oslo")["cluster"]
    sign_up(client, "m2", city="Oslo")
    path = f"/rooms/oslo-{segment}/members"
    assert client.get(path).status_code == 401
    for key in (READER, bearer(API_KEY)):
        answer = client.get(path, headers=key).get_json()
        assert [m["_id"] for m in answer["members"]] == ["m1", "m2"]
        assert answer["room"]["members"] == 2 and answer["next"] is None
    page = client.get(f"{path}?limit=1", headers=READER).get_json()
    assert page["next"] == "m1"
    rest = client.get(f"{path}?limit=1&after=m1", headers=READER).get_json()
    assert [m["_id"] for m in rest["members"]] == ["m2"]
    assert client.get("/rooms/nowhere-1/members", headers=READER).status_code == 404


def test_similar_users_over_http(client):
    sign_up(client, "me", city="Oslo", surf=True, coffee=True)
    sign_up(client, "twin", city="Bergen", surf=True, coffee=True)
    sign_up(client, "near", city="Oslo", surf=True)
    sign_up(client, "far", museums=True)
    answer = client.get("/users/me/similar?k=2", headers=READER).get_json()
    assert answer["_id"] == "me"
    assert [
        (s["_id"], s["similarity"], s["shared_interests"], s["city"]) for s in answer["similar"]
    ] == [
        ("twin", 1.0, ["surf", "coffee"], "Bergen"),
        ("near", 0.5, ["surf"], "Oslo"),
    ]
    same = client.get("/users/me/similar?city=same", headers=READER).get_json()
    assert [s["_id"] for s in same["similar"]] == ["near"]
    # Nobody shares the city of a user without one.
    alone = client.get("/users/far/similar?city=same", headers=READER).get_json()
    assert alone == {"_id": "far", "similar": []}


@pytest.mark.parametrize(
    "path, status",
    [
        ("/users/me/similar?k=0", 400),
        ("/users/me/similar?k=101", 400),
        ("/users/me/similar?city=Oslo", 400),
        ("/users/nobody/similar", 404),
    ],
)
def test_bad_similar_queries(client, path, status):
    sign_up(client, "me", city="Oslo")
    sign_up(client, "nocity")
    response = client.get(path, headers=READER)
    assert response.status_code == status
    assert response.get_json()["detail"]


def test_erasure_leaves_no_trace_in_rooms_or_neighbours(client):
    segment = sign_up(client, "stay", city="Oslo")["cluster"]
    sign_up(client, "gone", city="Oslo")
    assert client.delete("/users/gone", headers=bearer(API_KEY)).status_code == 204
    members = client.get(f"/rooms/oslo-{segment}/members", headers=READER).get_json()
    assert [m["_id"] for m in members["members"]] == ["stay"]
    assert members["room"]["members"] == 1
    assert client.get("/users/stay/similar", headers=READER).get_json()["similar"] == []
