"""The segments explained: /clusters, /clusters/<n>, the heatmap, /version, explanations."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nomads_cluster.segmentation.interests import INTEREST_KEYS, encode_interests
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, TOP_REASONS
from nomads_cluster.segmentation.survey import read_survey

CARD = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())


@pytest.fixture
def database_url(tmp_path) -> str:
    """SQLite only: what is tested here reads the model, not the store."""
    return f"sqlite:///{tmp_path}/nomads.sqlite3"


def test_clusters_lists_the_loaded_models_segments(client, sklearn_model):
    body = client.get("/clusters").get_json()
    assert body["model_version"] == CARD["version"]
    assert [s["segment"] for s in body["segments"]] == [1, 2, 3, 4]
    for segment, weights in zip(body["segments"], sklearn_model.components_, strict=True):
        heaviest = [INTEREST_KEYS[i] for i in np.argsort(-weights, kind="stable")]
        listed = [item["interest"] for item in segment["top_interests"]]
        assert listed == heaviest[: len(listed)]
        assert segment["label"].split(", ") == listed[: len(segment["label"].split(", "))]
        assert [item["weight"] for item in segment["top_interests"]] == pytest.approx(
            sorted(weights, reverse=True)[: len(listed)], abs=1e-6
        )
    assert sum(s["share"] for s in body["segments"]) == pytest.approx(1, abs=1e-5)
    with client.get(body["heatmap"]) as heatmap:
        assert heatmap.status_code == 200


def test_shares_are_the_training_users_segments(client, survey_path, sklearn_model):
    features = read_survey(survey_path).features
    counts = np.bincount(sklearn_model.transform(features).argmax(axis=1), minlength=4)
    shares = [s["share"] for s in client.get("/clusters").get_json()["segments"]]
    assert shares == pytest.approx(counts / len(features), abs=1e-6)


def test_one_segment(client):
    listed = client.get("/clusters").get_json()["segments"]
    for segment in listed:
        assert client.get(f"/clusters/{segment['segment']}").get_json() == segment


@pytest.mark.parametrize("number", [0, 5, -1, 99])
def test_unknown_segment_is_a_404_problem(client, number):
    response = client.get(f"/clusters/{number}")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["detail"] == f"the segments are 1, 2, 3, 4; there is no {number}"


def test_heatmap_is_the_png_beside_the_model(client):
    with client.get("/clusters/heatmap.png") as response:
        assert response.status_code == 200
        assert response.mimetype == "image/png"
        assert response.data == (DEFAULT_MODEL_DIR / "heatmap.png").read_bytes()


def test_model_without_heatmap_answers_404(make_app, config_for, tmp_path, model_copy):
    (model_copy / "heatmap.png").unlink()
    app = make_app(config_for(f"sqlite:///{tmp_path}/db.sqlite3", MODEL_DIR=str(model_copy)))
    response = app.test_client().get("/clusters/heatmap.png")
    assert response.status_code == 404
    assert "nomads-cluster heatmap" in response.get_json()["detail"]


def test_version_is_the_model_card(client):
    assert client.get("/version").get_json() == CARD


def test_preview_answers_as_cluster_and_stores_nothing(client, store):
    body = {"_id": "try-me", "interests": {"surf": True, "sunsets": True}}
    preview = client.post("/cluster/preview", json=body)
    assert preview.status_code == 200
    assert store.assignments.current("try-me") is None
    assert client.post("/cluster", json=body).get_json() == preview.get_json()


def test_preview_rejects_bad_bodies_as_cluster_does(client):
    response = client.post("/cluster/preview", json={"_id": 1, "interests": {"surfing": True}})
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["pointer"] == "#/interests/surfing"


interest_sets = st.dictionaries(st.sampled_from(INTEREST_KEYS), st.just(True), max_size=26)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(interests=interest_sets)
def test_explanation_adds_up_to_the_scores(client, app, interests):
    answer = client.post("/cluster/preview", json={"_id": 1, "interests": interests}).get_json()
    explanation = answer["explanation"]
    scores = answer["scores"]
    total = sum(scores.values())
    if not interests:
        assert answer["no_interests"] and explanation["top_interests"] == []
        assert set(explanation["normalised_scores"].values()) == {0.0}
        return
    assert explanation["normalised_scores"] == pytest.approx(
        {segment: score / total for segment, score in scores.items()}
    )
    assert max(explanation["normalised_scores"], key=explanation["normalised_scores"].get) == str(
        answer["cluster"]
    )
    # Every reason is a chosen interest; they are the largest contributions, in order,
    # and the contributions of all chosen interests add up to the segment's score.
    model = app.extensions["segment_model"]
    features = encode_interests(interests)
    everything = model.scorer.contributions(features, answer["cluster"] - 1)
    # They add up to the exact optimum, which is the answer's score but near ties,
    # where the answer keeps scikit-learn's descent, within its tolerance.
    optimum = model.scorer.optimal_scores(features[None, :])[0][answer["cluster"] - 1]
    assert sum(everything) == pytest.approx(optimum, abs=1e-12)
    assert sum(everything) == pytest.approx(scores[str(answer["cluster"])], abs=1e-4)
    reasons = explanation["top_interests"]
    assert len(reasons) <= TOP_REASONS
    assert all(item["interest"] in interests for item in reasons)
    values = [item["contribution"] for item in reasons]
    assert values == sorted(values, reverse=True) and all(v > 0 for v in values)
    positives = sorted((v for v in everything if v > 0), reverse=True)
    assert values == pytest.approx(positives[:TOP_REASONS])


def test_batch_answers_carry_the_same_explanation(client):
    users = [{"_id": n, "interests": {key: True for key in INTEREST_KEYS[n::5]}} for n in range(5)]
    batch = client.post("/cluster/batch", json={"users": users}).get_json()["results"]
    for user, result in zip(users, batch, strict=True):
        single = client.post("/cluster/preview", json=user).get_json()["explanation"]
        explanation = result["explanation"]
        assert explanation["normalised_scores"] == pytest.approx(single["normalised_scores"])
        reasons = [(item["interest"], item["contribution"]) for item in single["top_interests"]]
        assert [
            (item["interest"], pytest.approx(item["contribution"]))
            for item in explanation["top_interests"]
        ] == reasons
