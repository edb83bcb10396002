"""Choosing the number of segments: the measures, the rule, the report."""

import json

import numpy as np
import pytest

from nomads_cluster.cli import main
from nomads_cluster.segmentation import selection
from nomads_cluster.segmentation.model import load_model
from nomads_cluster.segmentation.selection import Candidate, choose, co_membership_agreement


def candidate(k: int, stability: float, silhouette: float) -> Candidate:
    return Candidate("nmf", k, reconstruction_error=1.0, stability=stability, silhouette=silhouette)


def test_agreement_of_identical_and_relabelled_runs_is_one():
    run = np.array([0, 0, 1, 1, 2, 2])
    assert co_membership_agreement([run, run]) == 1.0
    assert co_membership_agreement([run, (run + 1) % 3]) == 1.0  # numbering is irrelevant


def test_agreement_counts_the_pairs_kept_together():
    a = np.array([0, 0, 0, 1])  # pairs together: (0,1) (0,2) (1,2)
    b = np.array([0, 0, 1, 1])  # pairs together: (0,1) (2,3)
    # From a, 1 of 3 pairs stays together in b; from b, 1 of 2 in a.
    assert co_membership_agreement([a, b]) == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_rule_prefers_silhouette_among_the_stable_then_fewer_segments():
    picked = choose([candidate(2, 0.9, 0.3), candidate(3, 0.85, 0.5), candidate(4, 0.5, 0.9)])
    assert picked.components == 3  # 4 has the best silhouette but is not stable
    tie = choose([candidate(2, 0.9, 0.5), candidate(3, 0.9, 0.5)])
    assert tie.components == 2
    none_stable = choose([candidate(2, 0.7, 0.1), candidate(3, 0.75, 0.2), candidate(4, 0.6, 0.9)])
    assert none_stable.components == 3


def test_clear_clusters_are_found(tmp_path):
    # Three well-separated groups of users: both algorithms must find exactly three.
    rng = np.random.default_rng(0)
    groups = [np.isin(np.arange(26), range(start, start + 8)) for start in (0, 9, 18)]
    features = np.array(
        [(groups[i % 3] ^ (rng.random(26) < 0.03)).astype(float) for i in range(150)]
    )
    candidates = selection.compare(features, ks=range(2, 6), restarts=4)
    for algorithm in selection.ALGORITHMS:
        picked = choose([c for c in candidates if c.algorithm == algorithm])
        assert picked.components == 3, (algorithm, candidates)
        assert picked.stability >= selection.MIN_STABILITY


def test_train_auto_writes_the_report_and_fits_the_chosen_count(runner, survey_path, tmp_path):
    out = tmp_path / "auto"
    result = runner.invoke(
        main, ["train", "--data", str(survey_path), "--out", str(out), "--components", "auto"]
    )
    assert result.exit_code == 0, result.output
    card = json.loads((out / "model.json").read_text())
    chosen = card["selection"]["chosen_components"]
    assert f"chose {chosen} segments" in result.output
    assert load_model(out).n_segments == card["n_components"] == chosen
    report = (out / "selection.md").read_text()
    assert "| segments | reconstruction error | stability | silhouette | |" in report
    assert report.count("| chosen |") == 2  # one per algorithm
    assert (out / "selection.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    nmf = card["selection"]["candidates"]
    assert [c["components"] for c in nmf] == list(selection.COMPONENT_RANGE)
    errors = [c["reconstruction_error"] for c in nmf]
    assert errors == sorted(errors, reverse=True)  # more segments fit closer


@pytest.mark.parametrize("value", ["1", "11", "four", ""])
def test_components_must_be_a_count_or_auto(runner, value):
    result = runner.invoke(main, ["train", "--components", value])
    assert result.exit_code == 2
    assert "a number of segments from 2 to 10, or auto" in result.output
