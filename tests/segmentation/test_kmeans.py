"""The k-means alternative: trained like NMF, served with the same API."""

import json

import joblib
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nomads_cluster.cli import main
from nomads_cluster.segmentation.interests import INTEREST_KEYS, encode_interests
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, load_model
from nomads_cluster.segmentation.survey import read_survey


@pytest.fixture(scope="module")
def kmeans_dir(survey_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("kmeans")
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--data",
            str(survey_path),
            "--out",
            str(out),
            "--algorithm",
            "kmeans",
            "--previous",
            str(DEFAULT_MODEL_DIR),
        ],
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def served(kmeans_dir):
    return load_model(kmeans_dir)


@pytest.fixture(scope="module")
def fitted(kmeans_dir):
    return joblib.load(kmeans_dir / "model.pkl")


users = arrays(
    np.float64, st.tuples(st.integers(1, 30), st.just(26)), elements=st.sampled_from([0.0, 1.0])
)


@settings(max_examples=200, deadline=None)
@given(features=users)
def test_segment_is_kmeans_predict(served, fitted, features):
    segments, scores = served.assign_users(features)
    expected = [served.numbers[label] for label in fitted.predict(features)]
    assert segments.tolist() == expected
    np.testing.assert_allclose(scores.sum(axis=1), 1.0)
    for user, segment in zip(features, segments.tolist(), strict=True):
        assert served.assign_user(user)[0] == segment


def test_scores_are_the_responsibilities_of_the_centroids(served, fitted, survey_path):
    features = read_survey(survey_path).features
    variance = served.card.score_variance
    assert variance == pytest.approx(fitted.inertia_ / features.size)
    distances = ((features[:, None, :] - fitted.cluster_centers_[None]) ** 2).sum(axis=2)
    logits = -distances / (2 * variance)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(served.scorer.scores(features), expected, atol=1e-12)


def test_contributions_make_up_the_logit(served):
    scorer = served.scorer
    rng = np.random.default_rng(2)
    for user in (rng.random((20, 26)) < 0.3).astype(float):
        closeness = 2 * scorer.components @ user - (scorer.components**2).sum(axis=1)
        for segment in range(scorer.n_components):
            constant = -(scorer.components[segment] ** 2).sum() / (2 * scorer.variance)
            logit = closeness[segment] / (2 * scorer.variance)
            assert sum(scorer.contributions(user, segment)) + constant == pytest.approx(logit)


def test_card_and_numbers(kmeans_dir, served):
    card = json.loads((kmeans_dir / "model.json").read_text())
    assert card["algorithm"] == "sklearn.cluster.KMeans"
    assert card["parameters"] == {"n_init": 10, "random_state": 42}
    assert sorted(served.numbers) == [1, 2, 3, 4]
    # Numbered against the NMF model: each centroid takes the number of the component
    # its profile is closest to, where close enough.
    assert card["numbering"]["previous_version"] == load_model(DEFAULT_MODEL_DIR).version


def test_the_service_answers_with_a_kmeans_model(
    make_app, config_for, kmeans_dir, served, tmp_path
):
    app = make_app(config_for(f"sqlite:///{tmp_path}/db.sqlite3", MODEL_DIR=str(kmeans_dir)))
    client = app.test_client()
    interests = {"drinks": True, "parties": True, "concerts": True}
    answer = client.post("/cluster", json={"_id": "k", "interests": interests}).get_json()
    segment, scores = served.assign_user(encode_interests(interests))
    assert answer["cluster"] == segment
    assert answer["scores"] == pytest.approx(served.scores_by_number(scores))
    assert list(answer["scores"]) == sorted(answer["scores"], key=int)
    assert sum(answer["explanation"]["normalised_scores"].values()) == pytest.approx(1)
    reasons = [item["interest"] for item in answer["explanation"]["top_interests"]]
    assert reasons and set(reasons) <= set(interests)
    assert client.get("/version").get_json()["algorithm"] == "sklearn.cluster.KMeans"
    empty = client.post("/cluster", json={"_id": "e", "interests": {}}).get_json()
    assert empty["no_interests"] is True
    assert empty["cluster"] == served.assign_user(np.zeros(len(INTEREST_KEYS)))[0]


def test_auto_with_kmeans_fits_kmeans_choice(runner, survey_path, tmp_path):
    out = tmp_path / "auto"
    result = runner.invoke(
        main,
        [
            "train",
            "--data",
            str(survey_path),
            "--out",
            str(out),
            "--components",
            "auto",
            "--algorithm",
            "kmeans",
        ],
    )
    assert result.exit_code == 0, result.output
    card = json.loads((out / "model.json").read_text())
    assert card["algorithm"] == "sklearn.cluster.KMeans"
    assert {c["algorithm"] for c in card["selection"]["candidates"]} == {"kmeans"}
    assert card["n_components"] == card["selection"]["chosen_components"]
