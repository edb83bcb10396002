"""URLs match as written: ASCII numbers, no redirect built from the client's Host."""

import pytest
from conftest import READER


@pytest.mark.parametrize("path", ["/clusters/\u0661", "/clusters/\uff11", "/clusters/\u00b9"])
def test_a_segment_number_is_ascii_digits(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_ascii_segment_numbers_still_match(client):
    assert client.get("/clusters/1").status_code == 200
    assert client.get("/clusters/-1").status_code == 404  # signed, and no such segment


@pytest.mark.parametrize("path", ["/clusters//1", "//clusters", "/users//x", "/cluster//"])
def test_no_redirect_names_the_clients_host(client, path):
    # PATH_INFO as a server passes it (the test client would read "//x" as a host).
    response = client.get(
        "/", headers={"Host": "evil.example", **READER}, environ_overrides={"PATH_INFO": path}
    )
    assert not 300 <= response.status_code < 400  # served as written (404), or as "/x"
    assert "Location" not in response.headers


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("/users/u/history?limit=", "\u00b9"),
        ("/users/u/history?limit=", "\uff11\uff10"),
        ("/clusters/drift?window=", "\u00b2"),
        ("/clusters/drift?window=", "\uff11\uff10"),
        ("/clusters/drift?window=", "\u0661"),
        ("/clusters/drift?window=", "1e3"),
        ("/clusters/drift?window=", "9" * 400),
    ],
)
def test_query_numbers_are_ascii_digits_or_a_400(client, path, value):
    client.post("/cluster", json={"_id": "u", "interests": {"surf": True}})
    response = client.get(path + value, headers=READER)
    assert response.status_code == 400
    assert "must be an integer from 1 to" in response.get_json()["detail"]
