"""`nomads-cluster import-model`: a model file trained elsewhere, read by the restricted
unpickler, served with the segments scikit-learn gives; anything else refused."""

import json
import pickle

import joblib
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import NMF

from nomads_cluster.cli import main
from nomads_cluster.segmentation.interests import INTEREST_KEYS
from nomads_cluster.segmentation.model import load_model
from nomads_cluster.segmentation.survey import read_survey

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def users(n: int, seed: int = 3) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, len(INTEREST_KEYS))) < 0.4).astype(float)


@pytest.fixture
def nmf_file(tmp_path):
    """An NMF trained here and written by scikit-learn's joblib, as a team would."""
    model = NMF(n_components=3, init="nndsvda", random_state=0).fit(users(200))
    path = tmp_path / "their_model.pkl"
    joblib.dump(model, path)
    return model, path


def import_model(runner, *args):
    return runner.invoke(main, ["import-model", *map(str, args)])


def test_an_imported_nmf_serves_the_segments_scikit_learn_gives(runner, nmf_file, tmp_path):
    model, path = nmf_file
    result = import_model(runner, path, "--out", tmp_path / "served")
    assert result.exit_code == 0, result.output
    served = load_model(tmp_path / "served")  # the checks of start-up, sha256 included
    fresh = users(500, seed=9)
    expected = model.transform(fresh).argmax(axis=1) + 1
    assert (served.assign_users(fresh)[0] == expected).all()
    assert np.allclose(served.scorer.scores(fresh), model.transform(fresh), atol=1e-3)
    card = json.loads((tmp_path / "served" / "model.json").read_text())
    assert card["training_data"] is None and {s["share"] for s in card["segments"]} == {None}
    top = INTEREST_KEYS[int(model.components_[0].argmax())]
    assert card["segments"][0]["label"].startswith(top)
    assert (tmp_path / "served" / "heatmap.png").stat().st_size > 0
    assert (tmp_path / "served" / "model.pkl").read_bytes() == path.read_bytes()


def test_with_its_data_the_card_has_shares_and_the_app_serves_it(
    runner, nmf_file, tmp_path, survey_path, make_app, config_for, database_url
):
    _, path = nmf_file
    result = import_model(runner, path, "--out", tmp_path / "served", "--data", survey_path)
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "served" / "model.json").read_text())
    assert card["training_data"]["sha256"] == read_survey(survey_path).sha256
    assert sum(s["share"] for s in card["segments"]) == pytest.approx(1, abs=1e-5)
    app = make_app(config_for(database_url, MODEL_DIR=str(tmp_path / "served")))
    client = app.test_client()
    answer = client.post("/cluster", json={"_id": 1, "interests": {"surf": True}})
    assert answer.status_code == 200 and answer.get_json()["model_version"] == card["version"]


def test_a_kmeans_file_needs_its_data_and_then_serves(runner, tmp_path, survey_path):
    features = read_survey(survey_path).features
    path = tmp_path / "kmeans.pkl"
    joblib.dump(KMeans(n_clusters=4, n_init=3, random_state=0).fit(features), path)
    refused = import_model(runner, path, "--out", tmp_path / "k")
    assert refused.exit_code == 1 and "give its training data (--data)" in refused.output
    accepted = import_model(runner, path, "--out", tmp_path / "k", "--data", survey_path)
    assert accepted.exit_code == 0, accepted.output
    assert load_model(tmp_path / "k").card.algorithm == "sklearn.cluster.KMeans"


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_hostile_pickle_is_refused_in_one_line_and_never_run(runner, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(Payload(marker)))
    result = import_model(runner, path, "--out", tmp_path / "served")
    assert result.exit_code == 1
    assert "io.open is not allowed in a model file" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "served").exists()


def test_a_model_of_other_features_is_refused(runner, tmp_path):
    path = tmp_path / "model.pkl"
    joblib.dump(
        NMF(n_components=3, random_state=0).fit(np.random.default_rng(0).random((50, 10))), path
    )
    result = import_model(runner, path, "--out", tmp_path / "served")
    assert result.exit_code == 1
    assert "not (segments, 26): it does not score the 26 interests" in result.output
    assert not (tmp_path / "served").exists()
