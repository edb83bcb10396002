"""Warm-started, anchored retraining (`train --warm-start`): the previous components
when nothing changed, fewer users moved than a cold fit, honest figures in the card."""

import json

import numpy as np
import pytest

from nomads_cluster.cli import main
from nomads_cluster.segmentation.fitting import anchored_updates, fit_anchored_nmf, fit_nmf
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, load_model
from nomads_cluster.segmentation.survey import Survey
from nomads_cluster.segmentation.training import number_segments, segments_of, train

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def test_on_the_same_data_it_keeps_the_previous_components(survey, committed, tmp_path):
    card = train(survey, tmp_path, previous=committed, anchor=0.02)
    warm = load_model(tmp_path)
    assert np.allclose(warm.scorer.components, committed.scorer.components, atol=1e-3)
    assert warm.numbers == committed.numbers
    assert (
        warm.assign_users(survey.features)[0] == committed.assign_users(survey.features)[0]
    ).all()
    assert card["warm_start"]["kept_training_users"] == 1.0


def test_the_anchor_trades_error_for_stability(survey):
    # The objective's two terms: a stronger anchor ends nearer H_prev, further from X.
    rows = np.random.default_rng(2).integers(0, survey.n_rows, survey.n_rows)
    features = survey.features[rows]
    previous = fit_nmf(survey.features).components_
    ends = []
    for anchor in (0.001, 0.1, 10.0):
        W, H, _ = anchored_updates(features, previous, anchor)
        assert (W >= 0).all() and (H >= 0).all()
        ends.append((np.linalg.norm(H - previous), np.linalg.norm(features - W @ H)))
    distances, errors = zip(*ends, strict=True)
    assert distances[0] > distances[1] > distances[2]
    assert errors[0] < errors[1] < errors[2]


def test_a_resample_moves_fewer_users_warm_than_cold_and_the_card_says_so(
    survey, committed, tmp_path
):
    rng = np.random.default_rng(0)  # the first resample of bench/warm_start.py
    resampled = Survey(
        features=survey.features[rng.integers(0, survey.n_rows, survey.n_rows)],
        sha256="bootstrap",
        source="bootstrap",
    )
    card = train(resampled, tmp_path, previous=committed, anchor=0.02)
    report = card["warm_start"]
    # The card's figures, computed again from scratch.
    before = committed.assign_users(resampled.features)[0]
    warm = load_model(tmp_path)
    kept = np.mean(warm.assign_users(resampled.features)[0] == before)
    cold = fit_nmf(resampled.features)
    cold_kept = np.mean(
        segments_of(
            cold.components_, number_segments(cold.components_, committed)[0], resampled.features
        )
        == before
    )
    assert report["kept_training_users"] == pytest.approx(kept, abs=1e-6)
    assert report["kept_training_users_cold"] == pytest.approx(cold_kept, abs=1e-6)
    assert report["error_vs_cold"] == pytest.approx(
        card["reconstruction_error"] / cold.reconstruction_err_ - 1, abs=1e-6
    )
    assert kept > cold_kept
    # The model is an NMF like any: scikit-learn's transform agrees with the scorer.
    model = fit_anchored_nmf(resampled.features, committed.scorer.components)
    assert np.allclose(
        model.transform(survey.features), warm.scorer.scores(survey.features), atol=1e-3
    )


def test_train_warm_start_from_the_command_line(runner, survey_path, tmp_path):
    result = runner.invoke(
        main,
        [
            "train",
            "--data",
            str(survey_path),
            "--out",
            str(tmp_path / "m"),
            "--previous",
            str(DEFAULT_MODEL_DIR),
            "--warm-start",
            "--anchor",
            "0.05",
        ],
    )
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert card["warm_start"]["anchor"] == 0.05
    assert "100% of the training users keep their segment" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "--warm-start needs --previous"),
        (["--previous", str(DEFAULT_MODEL_DIR), "--algorithm", "kmeans"], "--algorithm nmf"),
        (["--previous", str(DEFAULT_MODEL_DIR), "--components", "3"], "keeps the previous"),
    ],
)
def test_a_warm_start_it_cannot_do_is_refused_in_one_line(
    runner, survey_path, tmp_path, args, message
):
    result = runner.invoke(
        main,
        ["train", "--data", str(survey_path), "--out", str(tmp_path / "m"), "--warm-start", *args],
    )
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "m").exists()
