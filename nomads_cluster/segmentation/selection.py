"""Choosing the number of segments: NMF and k-means, 2 to 8 segments, side by side.

For each algorithm and number of segments k, on the survey:

- reconstruction error: ||X - X̂|| (Frobenius), X̂ being W H for NMF and each user's
  centroid for k-means; it falls as k grows, so it is read for its elbow;
- stability: over RESTARTS fits from different random starts, how often two users who
  share a segment in one fit still share one in another (mean over ordered pairs of
  fits); segments that depend on the start are not worth naming;
- silhouette of the segments, computed on the segment scores (NMF's W, k-means'
  distances to the centroids) of the fit with the production settings.

The rule (CHOICE_RULE): among the candidates at least MIN_STABILITY stable, the best
silhouette, the fewer segments on a tie; if none is that stable, the most stable.
"""

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import NMF
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import silhouette_score

from .fitting import FIT

ALGORITHMS = ("nmf", "kmeans")
COMPONENT_RANGE = range(2, 9)
RESTARTS = 10
MIN_STABILITY = 0.8
CHOICE_RULE = (
    f"among the candidates with stability >= {MIN_STABILITY}, the best silhouette "
    "(fewer segments on a tie); if none is that stable, the most stable"
)
REPORT_FILE, PLOT_FILE = "selection.md", "selection.png"


@dataclass(frozen=True)
class Candidate:
    algorithm: str
    components: int
    reconstruction_error: float
    stability: float
    silhouette: float


def fit_segments(algorithm: str, features: np.ndarray, k: int, seed: int | None = None) -> Any:
    """A fitted model: as ``train`` fits it when ``seed`` is None, else a random start."""
    with warnings.catch_warnings():
        # Some k and starts need more than the default iterations; the fit is still usable
        # for comparing, and the model trained after the choice warns on its own.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if seed is None:
            return FIT[algorithm](features, k)
        if algorithm == "nmf":
            return NMF(n_components=k, init="random", solver="cd", random_state=seed).fit(features)
        return KMeans(n_clusters=k, n_init=1, random_state=seed).fit(features)


def segment_scores(model: Any, features: np.ndarray) -> np.ndarray:
    """The users' scores per segment: NMF's W, or k-means' distances to the centroids."""
    return model.transform(features)


def segments_of(model: Any, features: np.ndarray) -> np.ndarray:
    if isinstance(model, KMeans):
        return model.predict(features)
    return segment_scores(model, features).argmax(axis=1)


def reconstruction_error(model: Any, features: np.ndarray) -> float:
    if isinstance(model, KMeans):
        return float(np.linalg.norm(features - model.cluster_centers_[model.predict(features)]))
    return float(model.reconstruction_err_)


def co_membership_agreement(labels: list[np.ndarray]) -> float:
    """Mean over ordered pairs of fits (a, b): of the user pairs sharing a segment in a,
    the part that share one in b."""
    upper = np.triu_indices(len(labels[0]), k=1)
    together = [(run[:, None] == run[None, :])[upper] for run in labels]
    agreements = [
        (a & b).sum() / a.sum()
        for i, a in enumerate(together)
        for j, b in enumerate(together)
        if i != j and a.sum()
    ]
    return float(np.mean(agreements)) if agreements else math.nan


def evaluate(algorithm: str, features: np.ndarray, k: int, restarts: int = RESTARTS) -> Candidate:
    production = fit_segments(algorithm, features, k)
    labels = segments_of(production, features)
    silhouette = (
        float(silhouette_score(segment_scores(production, features), labels))
        if len(set(labels.tolist())) > 1
        else math.nan
    )
    runs = [
        segments_of(fit_segments(algorithm, features, k, seed), features)
        for seed in range(1, restarts + 1)
    ]
    return Candidate(
        algorithm=algorithm,
        components=k,
        reconstruction_error=reconstruction_error(production, features),
        stability=co_membership_agreement(runs),
        silhouette=silhouette,
    )


def choose(candidates: list[Candidate]) -> Candidate:
    """The candidate CHOICE_RULE picks."""
    stable = [
        c for c in candidates if c.stability >= MIN_STABILITY and not math.isnan(c.silhouette)
    ]
    if stable:
        return max(stable, key=lambda c: (c.silhouette, -c.components))
    return max(candidates, key=lambda c: (c.stability, -c.components))


def compare(
    features: np.ndarray, ks: range = COMPONENT_RANGE, restarts: int = RESTARTS
) -> list[Candidate]:
    return [evaluate(a, features, k, restarts) for a in ALGORITHMS for k in ks]


def write_report(
    candidates: list[Candidate], chosen: dict[str, Candidate], out_dir: Path, n_users: int
) -> Path:
    """selection.md (tables, the rule, the choice) and selection.png (the three measures)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    measures = [
        ("reconstruction_error", "reconstruction error"),
        ("stability", "stability"),
        ("silhouette", "silhouette"),
    ]
    for axis, (field, title) in zip(axes, measures, strict=True):
        for algorithm in ALGORITHMS:
            rows = [c for c in candidates if c.algorithm == algorithm]
            axis.plot(
                [c.components for c in rows],
                [getattr(c, field) for c in rows],
                marker="o",
                label=algorithm,
            )
        if field == "stability":
            axis.axhline(MIN_STABILITY, color="grey", linestyle="--", linewidth=1)
        axis.set_title(title)
        axis.set_xlabel("segments")
        axis.legend()
    figure.savefig(out_dir / PLOT_FILE, dpi=100, metadata={"Software": None})
    plt.close(figure)

    lines = [
        "# Choosing the number of segments",
        "",
        f"{n_users} survey answers; {RESTARTS} random restarts per candidate for stability.",
        "",
        f"Rule: {CHOICE_RULE}.",
        "",
        f"![The three measures by number of segments]({PLOT_FILE})",
        "",
    ]
    for algorithm in ALGORITHMS:
        pick = chosen[algorithm]
        reason = (
            f"the best silhouette of those at least {MIN_STABILITY} stable"
            if pick.stability >= MIN_STABILITY
            else f"no candidate reached stability {MIN_STABILITY}: the most stable"
        )
        lines += [
            f"## {algorithm}: {pick.components} segments",
            "",
            f"Chosen as {reason}.",
            "",
            "| segments | reconstruction error | stability | silhouette | |",
            "|---|---|---|---|---|",
        ]
        for c in (c for c in candidates if c.algorithm == algorithm):
            mark = "chosen" if c == pick else ""
            lines.append(
                f"| {c.components} | {c.reconstruction_error:.3f} | {c.stability:.3f} "
                f"| {c.silhouette:.3f} | {mark} |"
            )
        lines.append("")
    report = out_dir / REPORT_FILE
    report.write_text("\n".join(lines))
    return report


def selection_summary(candidates: list[Candidate], chosen: Candidate) -> dict[str, Any]:
    """What the model card keeps of the selection."""
    return {
        "rule": CHOICE_RULE,
        "chosen_components": chosen.components,
        "report": REPORT_FILE,
        "candidates": [asdict(c) for c in candidates if c.algorithm == chosen.algorithm],
    }
