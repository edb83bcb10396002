"""How far a retrain moves the survey's users, cold and warm-started (`train --warm-start`).

On bootstrap resamples of the survey, against the committed model: the share of the
resample's users who keep their segment, and the reconstruction error against a cold
fit of the same resample, for a cold fit (numbered by `--previous`) and for anchored
fits of several anchors. Run: .venv/bin/python bench/warm_start.py
"""

import argparse
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from nomads_cluster.cli.model import DEFAULT_SURVEY
from nomads_cluster.segmentation.card import DEFAULT_ANCHOR
from nomads_cluster.segmentation.fitting import fit_anchored_nmf, fit_nmf
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, load_model
from nomads_cluster.segmentation.survey import read_survey
from nomads_cluster.segmentation.training import number_segments, segments_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=20)
    parser.add_argument("--anchors", default=f"0.005,0.01,{DEFAULT_ANCHOR},0.05,0.1")
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    features = read_survey(DEFAULT_SURVEY).features
    committed = load_model(DEFAULT_MODEL_DIR)
    anchors = [float(a) for a in args.anchors.split(",")]
    kept: dict[str, list[float]] = {"cold": [], **{str(a): [] for a in anchors}}
    excess: dict[str, list[float]] = {str(a): [] for a in anchors}
    rng = np.random.default_rng(0)
    for _ in range(args.resamples):
        resample = features[rng.integers(0, len(features), len(features))]
        before = committed.assign_users(resample)[0]
        cold = fit_nmf(resample)
        numbers = number_segments(cold.components_, committed)[0]
        kept["cold"].append(np.mean(segments_of(cold.components_, numbers, resample) == before))
        for anchor in anchors:
            warm = fit_anchored_nmf(resample, committed.scorer.components, anchor)
            numbers = number_segments(warm.components_, committed)[0]
            now = segments_of(warm.components_, numbers, resample)
            kept[str(anchor)].append(np.mean(now == before))
            excess[str(anchor)].append(warm.reconstruction_err_ / cold.reconstruction_err_ - 1)
    print(f"{args.resamples} bootstrap resamples of the survey's {len(features)} answers")
    print("| fit | users kept: mean (lowest) | error against a cold fit: mean (highest) |")
    print("|---|---|---|")
    for name, shares in kept.items():
        errors = excess.get(name)
        error = "" if errors is None else f"{np.mean(errors):+.1%} ({max(errors):+.1%})"
        label = "cold (`--previous`)" if name == "cold" else f"warm, anchor {name}"
        print(f"| {label} | {np.mean(shares):.2f} ({min(shares):.2f}) | {error} |")


if __name__ == "__main__":
    main()
