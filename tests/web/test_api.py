import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nomads_cluster.segmentation.interests import INTEREST_KEYS
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR
from nomads_cluster.segmentation.survey import read_survey
from nomads_cluster.web import api

APP_EXAMPLE = {"_id": "6172a562284bf0c3a4c8632a", "interests": {"surf": True, "coffee": True}}


def expected_segment(sklearn_model, interests: dict) -> int:
    features = np.array([[float(bool(interests.get(key, False))) for key in INTEREST_KEYS]])
    return int(sklearn_model.transform(features).argmax()) + 1


def test_app_example_request(client, sklearn_model):
    response = client.post("/cluster", json=APP_EXAMPLE)
    assert response.status_code == 200
    body = response.get_json()
    assert body["_id"] == APP_EXAMPLE["_id"]
    assert body["cluster"] == expected_segment(sklearn_model, APP_EXAMPLE["interests"])
    assert body["no_interests"] is False
    assert set(body["scores"]) == {"1", "2", "3", "4"}
    assert (
        body["model_version"]
        == json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())["version"]
    )


def test_survey_first_row(client, survey_path, sklearn_model):
    first = read_survey(survey_path).features[0]
    interests = {key: bool(value) for key, value in zip(INTEREST_KEYS, first, strict=True)}
    response = client.post("/cluster", json={"_id": 1, "interests": interests})
    assert response.status_code == 200
    assert response.get_json()["cluster"] == expected_segment(sklearn_model, interests)
    assert response.get_json()["scores"] == pytest.approx(
        {str(i + 1): s for i, s in enumerate(sklearn_model.transform(first[None])[0])}, abs=1e-4
    )


@pytest.mark.parametrize("user_id", ["6172a562284bf0c3a4c8632a", 42, 0, -7, 2**70, "ü ñ"])
def test_id_is_echoed_unchanged(client, user_id):
    response = client.post("/cluster", json={"_id": user_id, "interests": {}})
    assert response.status_code == 200
    assert response.get_json()["_id"] == user_id
    assert type(response.get_json()["_id"]) is type(user_id)


def test_zero_and_one_mean_false_and_true(client):
    as_bools = client.post(
        "/cluster", json={"_id": "a", "interests": {"surf": True, "parks": False}}
    )
    as_ints = client.post("/cluster", json={"_id": "a", "interests": {"surf": 1, "parks": 0}})
    assert as_ints.get_json() == as_bools.get_json()


def test_missing_interest_means_false(client):
    explicit = {key: key == "museums" for key in INTEREST_KEYS}
    full = client.post("/cluster", json={"_id": "a", "interests": explicit})
    sparse = client.post("/cluster", json={"_id": "a", "interests": {"museums": True}})
    assert full.get_json() == sparse.get_json()


def test_no_interests_is_flagged_and_deterministic(client):
    answers = [
        client.post("/cluster", json={"_id": "a", "interests": {}}).get_json() for _ in range(2)
    ]
    assert answers[0] == answers[1]
    assert answers[0]["cluster"] == 1
    assert answers[0]["no_interests"] is True
    assert set(answers[0]["scores"].values()) == {0.0}


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/json"]
)
def test_json_body_is_read_whatever_the_content_type(client, content_type):
    response = client.post("/cluster", data=json.dumps(APP_EXAMPLE), content_type=content_type)
    assert response.status_code == 200
    assert response.get_json()["_id"] == APP_EXAMPLE["_id"]


def problem_of(response, status: int) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["status"] == status
    assert problem["title"] and problem["detail"]
    assert "Traceback" not in response.get_data(as_text=True)
    return problem


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"", "the body is empty"),
        (b'{"_id": "a", "interests": {', "EOF while parsing"),
        (b"{'_id': 'a'}", "key must be a string"),
        (b"\xff\xfe", "Invalid JSON"),
    ],
)
def test_malformed_json_is_400(client, body, detail):
    assert detail in problem_of(client.post("/cluster", data=body), 400)["detail"]


@pytest.mark.parametrize(
    ("body", "pointer", "detail"),
    [
        ([1, 2], "#", "must be a JSON object"),
        ("text", "#", "must be a JSON object"),
        (None, "#", "must be a JSON object"),
        ({"interests": {}}, "#/_id", "is required"),
        ({"_id": None, "interests": {}}, "#/_id", "non-empty string"),
        ({"_id": True, "interests": {}}, "#/_id", "non-empty string"),
        ({"_id": 1.5, "interests": {}}, "#/_id", "non-empty string"),
        ({"_id": 1e300, "interests": {}}, "#/_id", "non-empty string"),
        ({"_id": "", "interests": {}}, "#/_id", "non-empty string"),
        ({"_id": ["a"], "interests": {}}, "#/_id", "non-empty string"),
        ({"_id": "a"}, "#/interests", "is required"),
        ({"_id": "a", "interests": ["surf"]}, "#/interests", "must be a JSON object"),
        ({"_id": "a", "interests": "surf"}, "#/interests", "must be a JSON object"),
        ({"_id": "a", "interests": {"yoga": True}}, "#/interests/yoga", "unknown interest 'yoga'"),
        ({"_id": "a", "interests": {"surf": 2}}, "#/interests/surf", "must be true, false, 0 or 1"),
        ({"_id": "a", "interests": {"surf": "true"}}, "#/interests/surf", "must be true, false"),
        ({"_id": "a", "interests": {"surf": 0.5}}, "#/interests/surf", "must be true, false"),
        ({"_id": "a", "interests": {"surf": None}}, "#/interests/surf", "must be true, false"),
    ],
)
def test_invalid_body_is_422_with_where_and_what(client, body, pointer, detail):
    # json.dumps, not json=: the test client sends json=None as no body at all.
    problem = problem_of(client.post("/cluster", data=json.dumps(body)), 422)
    matching = [e for e in problem["errors"] if e["pointer"] == pointer]
    assert matching, problem
    assert detail in matching[0]["detail"]
    assert pointer in problem["detail"]


def test_an_integer_id_written_as_a_whole_float_is_that_integer(client):
    """The OpenAPI document's ``integer`` is JSON Schema's, in which 5.0 is 5."""
    body = {"interests": {"surf": True, "museums": True}}
    as_float = client.post("/cluster", data=json.dumps({"_id": 5.0, **body}))
    assert as_float.status_code == 200
    assert as_float.get_json() == client.post("/cluster", json={"_id": 5, **body}).get_json()
    assert type(as_float.get_json()["_id"]) is int  # echoed as the integer, not 5.0


def test_an_interest_written_as_a_whole_float_is_that_number(client):
    """The interests' enum of 0 and 1 is JSON Schema's, in which 1.0 is 1."""
    as_floats = client.post("/cluster", json={"_id": "f", "interests": {"surf": 1.0, "sushi": 0.0}})
    as_integers = client.post("/cluster", json={"_id": "f", "interests": {"surf": 1, "sushi": 0}})
    assert as_floats.status_code == 200
    assert as_floats.get_json() == as_integers.get_json()
    assert as_floats.get_json()["explanation"]["top_interests"][0]["interest"] == "surf"


def test_unknown_interest_lists_the_valid_ones(client):
    problem = problem_of(
        client.post("/cluster", json={"_id": "a", "interests": {"Surf": True}}), 422
    )
    assert problem["errors"][0]["detail"] == "unknown interest 'Surf'"
    assert all(key in problem["detail"] for key in INTEREST_KEYS)


def test_every_error_in_a_body_is_reported(client):
    body = {"_id": None, "interests": {"surf": 3, "yoga": True}}
    problem = problem_of(client.post("/cluster", json=body), 422)
    pointers = {e["pointer"] for e in problem["errors"]}
    assert pointers == {"#/_id", "#/interests/surf", "#/interests/yoga"}


def test_oversized_body_is_413(app, client):
    limit = app.config["MAX_CONTENT_LENGTH"]
    problem = problem_of(client.post("/cluster", data=b" " * (limit + 1)), 413)
    assert str(limit) in problem["detail"]


def test_get_cluster_is_405_and_says_to_post(client):
    response = client.get("/cluster")
    problem = problem_of(response, 405)
    assert "POST" in [m.strip() for m in response.headers["Allow"].split(",")]
    assert "GET" not in response.headers["Allow"]
    assert "use POST" in problem["detail"]


def test_unknown_path_is_404_problem(client):
    assert problem_of(client.get("/nowhere"), 404)["instance"] == "/nowhere"


def test_health_names_the_model_version_and_the_store(client, app):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok",
        "model_version": app.extensions["segment_model"].version,
        "store": "ok",
    }


def test_home_page_names_the_service(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "nomads-cluster" in response.get_data(as_text=True)
    assert "/cluster" in response.get_data(as_text=True)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def with_client(max_examples: int) -> settings:
    # The test client keeps no state between requests: one per test is right.
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )


@with_client(max_examples=300)
@given(
    body=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {
                "_id": json_values,
                "interests": st.dictionaries(st.sampled_from([*INTEREST_KEYS, "x"]), json_values),
            }
        ),
    )
)
def test_no_json_body_makes_a_server_error(client, body):
    response = client.post("/cluster", data=json.dumps(body))
    assert response.status_code in (200, 400, 422)
    if response.status_code == 200:
        assert 1 <= response.get_json()["cluster"] <= 4


@with_client(max_examples=200)
@given(raw=st.binary(max_size=200))
def test_no_bytes_make_a_server_error(client, raw):
    assert client.post("/cluster", data=raw).status_code in (200, 400, 422)


def test_a_server_bug_is_a_logged_500_without_traceback(app, client, monkeypatch, caplog):
    # A schema failure while shaping the answer is ours, not the client's: 500, logged.

    monkeypatch.setattr(api, "normalised_scores", lambda scores: {"1": "not a number"})
    response = client.post("/cluster", json=APP_EXAMPLE)
    problem = problem_of(response, 500)
    assert "ValidationError" not in response.get_data(as_text=True)
    assert problem["detail"] == "the error was logged"
    assert "unhandled error on POST /cluster" in caplog.text


def test_a_body_of_many_unknown_interests_gets_a_short_answer_naming_the_valid_ones(client):
    interests = {f"unknown{n}": True for n in range(600)}
    body = json.dumps({"_id": "many", "interests": interests}).encode()
    response = client.post("/cluster", data=body)
    assert response.status_code == 422
    problem = response.get_json()
    assert len(problem["errors"]) == 10
    assert "; and 590 more; valid interests: " in problem["detail"]
    assert problem["detail"].count("valid interests") == 1
    assert len(response.get_data()) < len(body) / 4
