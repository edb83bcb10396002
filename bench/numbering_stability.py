"""How retrained segments match the committed ones: the basis of MATCH_THRESHOLD.

Retrains on bootstrap resamples of the survey and reports, against the committed model:
how often a naive retrain numbers the segments otherwise (argmax order), and the
cosine similarities of the Hungarian pairs, which `train --previous` keeps numbered
when at least MATCH_THRESHOLD. Run: .venv/bin/python bench/numbering_stability.py
"""

import argparse
import warnings
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.exceptions import ConvergenceWarning

from nomads_cluster.segmentation.fitting import fit_nmf
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, load_model
from nomads_cluster.segmentation.survey import read_survey
from nomads_cluster.segmentation.training import MATCH_THRESHOLD, _unit_rows

SURVEY = Path(__file__).resolve().parent.parent.parent / "shared/data/survey_responses.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resamples", type=int, default=100)
    parser.add_argument("--survey", type=Path, default=SURVEY)
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)

    features = read_survey(args.survey).features
    committed = _unit_rows(load_model(DEFAULT_MODEL_DIR).scorer.components)
    rng = np.random.default_rng(0)
    scrambled, paired = 0, []
    for _ in range(args.resamples):
        rows = rng.integers(0, len(features), len(features))
        similarity = _unit_rows(fit_nmf(features[rows]).components_) @ committed.T
        scrambled += list(similarity.argmax(axis=1)) != list(range(len(committed)))
        new, old = linear_sum_assignment(similarity, maximize=True)
        paired.extend(similarity[new, old])
    paired_array = np.array(paired)
    percentiles = np.percentile(paired_array, [1, 5, 10, 50])
    print(f"{args.resamples} bootstrap resamples of {len(features)} answers")
    print(f"naive retrain numbers segments otherwise: {scrambled} of {args.resamples}")
    print(
        "Hungarian pairs' similarity, percentiles 1/5/10/50: "
        + " / ".join(f"{p:.2f}" for p in percentiles)
    )
    below = (paired_array < MATCH_THRESHOLD).mean()
    print(f"pairs under MATCH_THRESHOLD ({MATCH_THRESHOLD}), so numbered as new: {below:.1%}")


if __name__ == "__main__":
    main()
