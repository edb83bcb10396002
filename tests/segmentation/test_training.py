import json
import warnings

import joblib
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.exceptions import ConvergenceWarning

from nomads_cluster.cli import main
from nomads_cluster.segmentation import training
from nomads_cluster.segmentation.fitting import fit_nmf
from nomads_cluster.segmentation.interests import INTEREST_KEYS
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, load_model, sha256_of
from nomads_cluster.segmentation.scoring import assign_segments


@pytest.fixture(scope="module")
def trained_dir(survey_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    result = CliRunner().invoke(main, ["train", "--data", str(survey_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_training_twice_gives_identical_components(survey):
    first, second = fit_nmf(survey.features), fit_nmf(survey.features)
    np.testing.assert_array_equal(first.components_, second.components_)


def test_model_trained_from_survey_equals_committed_one(trained_dir, survey):
    committed = joblib.load(DEFAULT_MODEL_DIR / "model.pkl")
    retrained = joblib.load(trained_dir / "model.pkl")
    np.testing.assert_allclose(retrained.components_, committed.components_, rtol=1e-9, atol=1e-12)
    # Same segment for every survey answer, component order included.
    np.testing.assert_array_equal(
        retrained.transform(survey.features).argmax(1),
        committed.transform(survey.features).argmax(1),
    )
    fresh_card = json.loads((trained_dir / "model.json").read_text())
    committed_card = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())
    assert fresh_card["training_data"] == committed_card["training_data"]
    assert [s["label"] for s in fresh_card["segments"]] == [
        s["label"] for s in committed_card["segments"]
    ]


def test_card_describes_the_model_and_its_data(trained_dir, survey):
    card = json.loads((trained_dir / "model.json").read_text())
    assert card["feature_columns"] == list(INTEREST_KEYS)
    assert card["n_components"] == 4
    assert card["model_sha256"] == sha256_of(trained_dir / "model.pkl")
    assert card["training_data"] == {
        "file": "survey_responses.csv",
        "sha256": survey.sha256,
        "rows": 115,
    }
    estimator = joblib.load(trained_dir / "model.pkl")
    assert card["reconstruction_error"] == pytest.approx(estimator.reconstruction_err_)
    segments = assign_segments(estimator.transform(survey.features))
    for segment in card["segments"]:
        n = segment["segment"]
        assert segment["share"] == pytest.approx(np.mean(segments == n), abs=1e-6)
        weights = estimator.components_[n - 1]
        top = [t["interest"] for t in segment["top_interests"]]
        assert top == [INTEREST_KEYS[i] for i in np.argsort(-weights)[: len(top)]]
        assert segment["label"] == ", ".join(top[:3])
    assert sum(s["share"] for s in card["segments"]) == pytest.approx(1.0)


def test_trained_model_is_servable(trained_dir):
    assert load_model(trained_dir).n_segments == 4


def test_train_reports_bad_survey_row(runner, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Timestamp,sports\n1/1/2021 00:00:00,Surf\n1/1/2021 00:00:01,Chess\n")
    result = runner.invoke(main, ["train", "--data", str(bad), "--out", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "row 2 (line 3): unknown option 'Chess'" in result.output
    assert not (tmp_path / "m").exists()


def test_train_tells_the_fits_warnings_once_each_before_its_results(
    survey_path, tmp_path, monkeypatch
):
    fit = training.train

    def warning_fit(*args, **kwargs):
        for _ in range(2):
            warnings.warn(
                "Maximum number of iterations 200 reached", ConvergenceWarning, stacklevel=2
            )
        return fit(*args, **kwargs)

    monkeypatch.setattr(training, "train", warning_fit)
    result = CliRunner().invoke(
        main, ["train", "--data", str(survey_path), "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == 0, result.output
    told = "warning from the fit: Maximum number of iterations 200 reached"
    assert result.output.count(told) == 1
    assert result.output.index(told) < result.output.index("trained on 115 answers")


def test_training_draws_the_heatmap_and_the_command_redraws_it(trained_dir, tmp_path):
    drawn = (trained_dir / "heatmap.png").read_bytes()
    with Image.open(trained_dir / "heatmap.png") as image:
        assert image.format == "PNG" and image.height > image.width > 0  # fits a phone
    (trained_dir / "heatmap.png").unlink()
    result = CliRunner().invoke(main, ["heatmap", "--model-dir", str(trained_dir)])
    assert result.exit_code == 0, result.output
    # No timestamp in the file: the same model redraws the same bytes.
    assert (trained_dir / "heatmap.png").read_bytes() == drawn


def test_heatmap_command_refuses_a_directory_without_a_model(tmp_path):
    result = CliRunner().invoke(main, ["heatmap", "--model-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "cannot read the model" in result.output
    assert not (tmp_path / "heatmap.png").exists()
