import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, ModelError, load_model, sha256_of

REPO = Path(__file__).resolve().parents[2]


def test_committed_model_loads_with_its_card():
    model = load_model(DEFAULT_MODEL_DIR)
    assert model.n_segments == model.card.n_components == 4
    assert model.version == model.card.model_sha256[:12]


def test_loaded_components_equal_sklearns(sklearn_model):
    model = load_model(DEFAULT_MODEL_DIR)
    np.testing.assert_array_equal(model.scorer.components, sklearn_model.components_)


def test_tampered_model_is_refused(model_copy):
    pkl = model_copy / "model.pkl"
    pkl.write_bytes(pkl.read_bytes() + b"\0")
    with pytest.raises(ModelError, match=r"refusing to unpickle .*model\.pkl: its sha256"):
        load_model(model_copy)


def _sign_into_card(model_dir: Path) -> None:
    """Make the card vouch for whatever model.pkl now holds."""
    card_path = model_dir / "model.json"
    card = json.loads(card_path.read_text())
    card["model_sha256"] = sha256_of(model_dir / "model.pkl")
    card_path.write_text(json.dumps(card))


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused_even_when_the_card_vouches_for_it(model_copy):
    (model_copy / "model.pkl").write_bytes(pickle.dumps(_RunsCode()))
    _sign_into_card(model_copy)
    with pytest.raises(ModelError, match=r"posix\.system is not allowed|os\.system is not allowed"):
        load_model(model_copy)


def _replace_pickle(model_dir: Path, estimator) -> None:
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    (model_dir / "model.pkl").write_bytes(buffer.getvalue())
    _sign_into_card(model_dir)


def test_pickle_of_another_estimator_is_refused(model_copy):
    _replace_pickle(model_copy, PCA(n_components=4).fit(np.eye(26)))
    with pytest.raises(ModelError, match="PCA is not allowed"):
        load_model(model_copy)


def test_pickle_of_another_algorithm_than_the_cards_is_refused(model_copy):
    _replace_pickle(model_copy, KMeans(n_clusters=4, n_init=1).fit(np.eye(26)))
    with pytest.raises(ModelError, match=r"does not hold a fitted sklearn\.decomposition\.NMF"):
        load_model(model_copy)


def test_card_with_other_features_is_refused(model_copy):
    card_path = model_copy / "model.json"
    card = json.loads(card_path.read_text())
    card["feature_columns"] = card["feature_columns"][::-1]
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="feature_columns"):
        load_model(model_copy)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda card: card.pop("segments"), "#/segments is required"),
        (lambda card: card.update(n_components="four"), "#/n_components"),
        (lambda card: card["segments"][0].pop("label"), "#/segments/0/label is required"),
    ],
)
def test_card_that_breaks_its_schema_is_refused_saying_where(model_copy, change, where):
    card_path = model_copy / "model.json"
    card = json.loads(card_path.read_text())
    change(card)
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="is not a model card") as refused:
        load_model(model_copy)
    assert where in str(refused.value)


def test_missing_model_dir_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="cannot read the model"):
        load_model(tmp_path / "nowhere")


def test_service_refuses_to_start_in_one_line(model_copy, tmp_path):
    pkl = model_copy / "model.pkl"
    pkl.write_bytes(pkl.read_bytes()[:-1])
    result = subprocess.run(
        [sys.executable, "-c", "import app_cluster"],
        cwd=REPO,
        env={
            **os.environ,
            "NOMADS_MODEL_DIR": str(model_copy),
            "NOMADS_DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("nomads-cluster: refusing to unpickle")


def test_serving_does_not_import_sklearn_or_pandas(tmp_path):
    code = (
        "import sys, app_cluster; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'pandas', 'scipy'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "NOMADS_DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "[]", result.stderr


def test_assign_user_gives_argmax_plus_one(sklearn_model):
    model = load_model(DEFAULT_MODEL_DIR)
    rng = np.random.default_rng(3)
    for user in (rng.random((50, 26)) < 0.4).astype(np.float64):
        segment, components = model.assign_user(user)
        scores = model.scores_by_number(components)
        assert segment == int(np.argmax(sklearn_model.transform(user[None, :]))) + 1
        assert list(scores) == ["1", "2", "3", "4"]
        assert scores[str(segment)] == max(scores.values())
