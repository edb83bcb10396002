"""Drift: recent segments against the training users' (population stability index)."""

import math

import pytest

from nomads_cluster.segmentation import drift
from nomads_cluster.segmentation.interests import INTEREST_KEYS
from nomads_cluster.segmentation.survey import read_survey
from nomads_cluster.store.records import Assignment


def psi_by_definition(expected: dict, actual: dict) -> float:
    return sum((actual[s] - expected[s]) * math.log(actual[s] / expected[s]) for s in expected)


def test_psi_terms_follow_the_definition():
    expected = {1: 0.2, 2: 0.3, 3: 0.5}
    counts = {1: 50, 2: 20, 3: 30}
    actual = {s: c / 100 for s, c in counts.items()}
    assert sum(drift.psi_terms(expected, counts).values()) == pytest.approx(
        psi_by_definition(expected, actual)
    )
    assert drift.psi_terms(expected, {1: 20, 2: 30, 3: 50}) == pytest.approx({1: 0, 2: 0, 3: 0})


def test_an_empty_segment_gives_a_finite_index():
    terms = drift.psi_terms({1: 0.5, 2: 0.5}, {1: 10})
    assert all(math.isfinite(t) for t in terms.values()) and sum(terms.values()) > 1


@pytest.mark.parametrize(
    ("psi", "n", "status"),
    [
        (0.05, 500, "stable"),
        (0.1, 500, "moderate"),
        (0.2, 500, "moderate"),
        (0.25, 500, "significant"),
        (3.0, 500, "significant"),
        (3.0, 99, "insufficient data"),
        (None, 0, "insufficient data"),
    ],
)
def test_verdicts_at_the_documented_thresholds(psi, n, status):
    assert drift.verdict(psi, n) == status


@pytest.fixture
def survey_users(survey_path) -> list[dict]:
    features = read_survey(survey_path).features
    return [
        {"_id": f"s{i}", "interests": {k: bool(v) for k, v in zip(INTEREST_KEYS, row, strict=True)}}
        for i, row in enumerate(features)
    ]


def test_the_training_users_themselves_show_no_drift(client, survey_users):
    for user in survey_users:
        assert client.post("/cluster", json=user).status_code == 200
    report = client.get("/clusters/drift").get_json()
    assert report["assignments"] == len(survey_users)
    assert report["psi"] == pytest.approx(0, abs=1e-9)
    assert report["status"] == "stable"
    for segment in report["segments"]:
        assert segment["recent_share"] == pytest.approx(segment["training_share"], abs=1e-6)


def test_a_shifted_population_is_significant_and_the_window_slides(client, survey_users):
    # 115 users like the survey's, then 150 party-goers: the latest 150 are all one segment.
    client.post("/cluster/batch", json={"users": survey_users})
    party = {"drinks": True, "parties": True, "concerts": True}
    shifted = [{"_id": f"p{i}", "interests": party} for i in range(150)]
    answers = client.post("/cluster/batch", json={"users": shifted}).get_json()["results"]
    party_segment = answers[0]["cluster"]

    latest = client.get("/clusters/drift?window=150").get_json()
    assert latest["assignments"] == 150
    assert latest["status"] == "significant"
    by_segment = {s["segment"]: s for s in latest["segments"]}
    assert by_segment[party_segment]["recent_share"] == 1.0
    expected = {s: by_segment[s]["training_share"] for s in by_segment}
    actual = {s: max(by_segment[s]["recent_share"], drift.SHARE_FLOOR) for s in by_segment}
    assert latest["psi"] == pytest.approx(psi_by_definition(expected, actual))

    everything = client.get("/clusters/drift?window=1000").get_json()
    assert everything["assignments"] == 265
    assert everything["psi"] < latest["psi"]


def test_only_live_assignments_of_the_served_model_count(client, store, app):
    model = app.extensions["segment_model"]

    def stored(user_id: str, source: str, version: str) -> Assignment:
        return Assignment(user_id, ("surf",), 1, {"1": 1.0}, version, source=source)

    store.assignments.save(
        [
            stored("r", "reassign", model.version),
            stored("a", "assign", model.version),
            stored("o", "api", "0ld0ld0ld0ld"),
        ]
    )
    assert client.get("/clusters/drift").get_json()["assignments"] == 0
    client.post("/cluster", json={"_id": "live", "interests": {"surf": True}})
    report = client.get("/clusters/drift").get_json()
    assert report["assignments"] == 1 and report["status"] == "insufficient data"


@pytest.mark.parametrize("window", ["0", "-1", "x", "1000001"])
def test_a_bad_window_is_a_400(client, window):
    response = client.get(f"/clusters/drift?window={window}")
    assert response.status_code == 400
    assert "window must be an integer" in response.get_json()["detail"]


def test_no_assignment_yet_is_no_verdict(client):
    report = client.get("/clusters/drift").get_json()
    assert report["psi"] is None and report["status"] == "insufficient data"
    assert report["window"] == 1000
