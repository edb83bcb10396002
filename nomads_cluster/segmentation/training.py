"""Training the NMF model on the survey and writing ``model.pkl`` with its card."""

import json
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import sklearn
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.decomposition import NMF

from . import selection as select
from .card import SegmentSummary
from .fitting import FIT, N_COMPONENTS, fit_anchored_nmf, fit_nmf
from .interests import INTEREST_KEYS, key_to_label
from .model import (
    CARD_FILE,
    FITTED_ATTRIBUTE,
    HEATMAP_FILE,
    MODEL_FILE,
    ModelError,
    SegmentModel,
    read_model_file,
    sha256_of,
)
from .scoring import MAX_COMPONENTS, MIN_COMPONENTS, CentroidScorer, SegmentScorer, assign_segments
from .survey import Survey

TOP_INTERESTS = 5  # interests listed per segment in the card
LABEL_INTERESTS = 3  # of which the label names the first few
# Cosine similarity of two segments' interest profiles above which a retrained segment
# continues an old one (and keeps its number). Calibrated on the survey: see the README.
MATCH_THRESHOLD = 0.5


ALGORITHM_NAMES = {"nmf": "sklearn.decomposition.NMF", "kmeans": "sklearn.cluster.KMeans"}
PROFILE_NAMES = {  # what the heatmap's columns are, by the card's algorithm
    "sklearn.decomposition.NMF": "NMF components",
    "sklearn.cluster.KMeans": "k-means centroids",
}


def fitted_profiles(model: NMF | KMeans) -> np.ndarray:
    """The segments' interest profiles: NMF components, or k-means centroids."""
    return model.cluster_centers_ if isinstance(model, KMeans) else model.components_


def number_segments(
    components: np.ndarray, previous: SegmentModel
) -> tuple[list[int], dict[str, Any], int]:
    """Segment numbers for new components that keep the previous model's meanings.

    Each new segment takes the number of the previous segment whose interest profile
    (its component, as a direction) it matches, by the Hungarian algorithm on their
    cosine similarities; a pair under MATCH_THRESHOLD is no match, and such a segment
    gets a number no model of the line has used. Returns the numbers (in component
    order), the card's account of the matching, and the highest number now used.
    """
    similarity = _unit_rows(components) @ _unit_rows(previous.scorer.components).T
    rows, columns = linear_sum_assignment(similarity, maximize=True)
    paired = dict(zip(rows.tolist(), columns.tolist(), strict=True))
    highest = max(previous.card.highest_segment_number or 0, *previous.numbers)
    numbers, matches = [], []
    for index in range(len(components)):
        column = paired.get(index)  # None: more new segments than old ones
        score = None if column is None else round(float(similarity[index, column]), 6)
        if score is not None and score >= MATCH_THRESHOLD:
            numbers.append(previous.numbers[column])
            matches.append({"segment": numbers[-1], "previous_segment": numbers[-1]})
        else:
            highest += 1
            numbers.append(highest)
            matches.append({"segment": highest, "previous_segment": None})
        matches[-1]["similarity"] = score
    numbering = {
        "previous_version": previous.version,
        "threshold": MATCH_THRESHOLD,
        "matches": matches,
        "retired": sorted(set(previous.numbers) - set(numbers)),
    }
    return numbers, numbering, highest


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def describe_segments(
    components: np.ndarray, positions: np.ndarray | None, numbers: list[int]
) -> list[dict[str, Any]]:
    """Per component: its segment number, a label from its top interests, their
    weights, and its share of the users (``positions``: each user's component, 1-based;
    None: no users known, no shares).
    """
    shares = (
        [None] * len(components)
        if positions is None
        else (np.bincount(positions, minlength=len(components) + 1)[1:] / len(positions)).tolist()
    )
    segments = []
    for index, weights in enumerate(components):
        top = np.argsort(-weights, kind="stable")[:TOP_INTERESTS]
        segments.append(
            {
                "segment": numbers[index],
                "label": ", ".join(INTEREST_KEYS[i] for i in top[:LABEL_INTERESTS]),
                "top_interests": [
                    {"interest": INTEREST_KEYS[i], "weight": round(float(weights[i]), 6)}
                    for i in top
                ],
                "share": None if shares[index] is None else round(shares[index], 6),
            }
        )
    return segments


def card_of(
    algorithm: str,
    state: dict[str, Any],
    model_sha256: str,
    survey: Survey | None,
    previous: SegmentModel | None = None,
) -> dict[str, Any]:
    """The model card of a fitted estimator's attributes (``vars`` of one fitted here,
    or the state of a file made elsewhere); ``survey``: what it was trained on, if known."""
    profiles = np.asarray(state[FITTED_ATTRIBUTE[algorithm]], dtype=np.float64)
    kmeans = algorithm == ALGORITHM_NAMES["kmeans"]
    if kmeans:
        variance = float(state["inertia_"] / survey.features.size)
        scorer: SegmentScorer | CentroidScorer = CentroidScorer(profiles, variance)
        parameters = ("n_init", "random_state")
        error = float(np.sqrt(state["inertia_"]))
    else:
        scorer, parameters = SegmentScorer(profiles), ("init", "solver", "random_state")
        error = float(state.get("reconstruction_err_", np.nan))
    positions = None if survey is None else assign_segments(scorer.scores(survey.features))
    if previous is None:
        numbers = list(range(1, len(profiles) + 1))
        numbering, highest = None, len(numbers)
    else:
        numbers, numbering, highest = number_segments(profiles, previous)
    card = {
        "version": model_sha256[:12],
        "algorithm": algorithm,
        "parameters": {k: state[k] for k in parameters if k in state},
        "feature_columns": list(INTEREST_KEYS),
        "n_components": len(profiles),
        "sklearn_version": state.get("_sklearn_version", "unknown"),
        "model_sha256": model_sha256,
        "training_data": None
        if survey is None
        else {"file": survey.source, "sha256": survey.sha256, "rows": survey.n_rows},
        "reconstruction_error": round(error, 9),
        "n_iter": int(state.get("n_iter_", 0)),
        "segments": describe_segments(profiles, positions, numbers),
        "highest_segment_number": highest,
    }
    if kmeans:
        card["score_variance"] = variance
    if numbering is not None:
        card["numbering"] = numbering
    return card


def build_card(
    model: NMF | KMeans, survey: Survey, model_sha256: str, previous: SegmentModel | None = None
) -> dict[str, Any]:
    algorithm = ALGORITHM_NAMES["kmeans" if isinstance(model, KMeans) else "nmf"]
    state = {**vars(model), "_sklearn_version": sklearn.__version__}
    return card_of(algorithm, state, model_sha256, survey, previous)


def segments_of(profiles: np.ndarray, numbers: list[int], features: np.ndarray) -> np.ndarray:
    """Each user's segment number under NMF components numbered ``numbers``."""
    positions = assign_segments(SegmentScorer(profiles).scores(features))
    return np.asarray(numbers)[positions - 1]


def warm_start_report(
    model: NMF, card: dict[str, Any], features: np.ndarray, previous: SegmentModel, anchor: float
) -> dict[str, Any]:
    """How a warm-started model compares with a cold fit of the same data: training
    users kept in their previous segment, and reconstruction error."""
    before = previous.assign_users(features)[0]
    numbers = [segment["segment"] for segment in card["segments"]]
    cold = fit_nmf(features, len(numbers))
    cold_numbers = number_segments(cold.components_, previous)[0]
    return {
        "previous_version": previous.version,
        "anchor": anchor,
        "kept_training_users": round(
            float(np.mean(segments_of(model.components_, numbers, features) == before)), 6
        ),
        "kept_training_users_cold": round(
            float(np.mean(segments_of(cold.components_, cold_numbers, features) == before)), 6
        ),
        "reconstruction_error_cold": round(float(cold.reconstruction_err_), 9),
        "error_vs_cold": round(model.reconstruction_err_ / cold.reconstruction_err_ - 1, 6),
    }


def draw_heatmap(
    components: np.ndarray,
    segments: list[SegmentSummary],
    path: str | Path,
    algorithm: str = ALGORITHM_NAMES["nmf"],
) -> None:
    """The picture the team shows: segments by interests, each cell the component's value.

    ``segments`` describe the components in order; rows are drawn by segment number.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, and no GUI toolkit to import
    from matplotlib import pyplot as plt

    # Interests down, segments across: a tall picture stays readable on a phone's width.
    order = sorted(range(len(segments)), key=lambda i: segments[i].segment)
    figure, axes = plt.subplots(
        figsize=(2.6 + 0.55 * len(order), 1.4 + 0.3 * len(INTEREST_KEYS)), layout="constrained"
    )
    image = axes.imshow(components[order].T, cmap="YlGnBu", aspect="auto", vmin=0)
    axes.set_yticks(range(len(INTEREST_KEYS)), [key_to_label(k) for k in INTEREST_KEYS])
    axes.set_xticks(range(len(order)), [str(segments[i].segment) for i in order])
    axes.xaxis.tick_top()
    axes.xaxis.set_label_position("top")
    axes.set_xlabel("segment")
    axes.set_title(f"Interests by segment ({PROFILE_NAMES[algorithm]})", fontsize="medium")
    figure.colorbar(image, ax=axes, label="weight", shrink=0.6)
    # No timestamp or software version in the file: the same model draws the same bytes.
    figure.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(figure)


def train(
    survey: Survey,
    out_dir: str | Path,
    previous: SegmentModel | None = None,
    components: int | Literal["auto"] = N_COMPONENTS,
    algorithm: Literal["nmf", "kmeans"] = "nmf",
    anchor: float | None = None,
) -> dict[str, Any]:
    """Fit the model on the survey, write model.pkl, model.json and heatmap.png.

    With ``previous``, segments keep the numbers of the previous segments they match.
    With ``anchor`` as well (a warm start, NMF only), the fit starts from the previous
    components and is kept near them (``fitting.fit_anchored_nmf``); the card's
    ``warm_start`` compares it with a cold fit. With ``components="auto"``, the number
    of segments is chosen (``selection``), and the comparison written beside the model
    (selection.md, selection.png). ``algorithm`` "kmeans" fits k-means instead of NMF.
    """
    out_dir = Path(out_dir)
    if anchor is not None and (previous is None or algorithm != "nmf"):
        raise ValueError("a warm start needs a previous NMF model and --algorithm nmf")
    if anchor is not None and previous.card.algorithm != ALGORITHM_NAMES["nmf"]:
        raise ValueError(f"a warm start needs an NMF previous model, not {previous.card.algorithm}")
    out_dir.mkdir(parents=True, exist_ok=True)
    selection = None
    if components == "auto":
        candidates = select.compare(survey.features)
        chosen = {
            algorithm: select.choose([c for c in candidates if c.algorithm == algorithm])
            for algorithm in select.ALGORITHMS
        }
        select.write_report(candidates, chosen, out_dir, survey.n_rows)
        selection = select.selection_summary(candidates, chosen[algorithm])
        components = chosen[algorithm].components
    if anchor is not None:
        model = fit_anchored_nmf(survey.features, previous.scorer.components, anchor)
    else:
        model = FIT[algorithm](survey.features, components)
    model_path = out_dir / MODEL_FILE
    joblib.dump(model, model_path)
    card = build_card(model, survey, sha256_of(model_path), previous)
    if selection is not None:
        card["selection"] = selection
    if anchor is not None:
        card["warm_start"] = warm_start_report(model, card, survey.features, previous, anchor)
    write_card_and_heatmap(card, fitted_profiles(model), out_dir)
    return card


def write_card_and_heatmap(card: dict[str, Any], profiles: np.ndarray, out_dir: Path) -> None:
    (out_dir / CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    segments = [SegmentSummary.model_validate(s) for s in card["segments"]]
    draw_heatmap(profiles, segments, out_dir / HEATMAP_FILE, card["algorithm"])


def import_model(
    model_file: str | Path, out_dir: str | Path, survey: Survey | None = None
) -> dict[str, Any]:
    """Serve a model file trained elsewhere: an NMF or k-means joblib file, read by the
    restricted unpickler (never a plain pickle.load), checked to score the 26
    interests, copied unchanged beside its card and heatmap. ``survey``: what it was
    trained on, for the segments' shares (a k-means model needs it for its scores)."""
    model_file, out_dir = Path(model_file), Path(out_dir)
    raw = model_file.read_bytes()
    algorithm, state = read_model_file(raw, str(model_file))
    profiles = np.asarray(state[FITTED_ATTRIBUTE[algorithm]], dtype=np.float64)
    if profiles.ndim != 2 or profiles.shape[1] != len(INTEREST_KEYS):
        raise ModelError(
            f"{model_file}: its profiles have shape {profiles.shape}, not (segments, "
            f"{len(INTEREST_KEYS)}): it does not score the 26 interests"
        )
    if not MIN_COMPONENTS <= len(profiles) <= MAX_COMPONENTS:
        raise ModelError(
            f"{model_file}: {len(profiles)} segments; from {MIN_COMPONENTS} to "
            f"{MAX_COMPONENTS} are served"
        )
    if algorithm == ALGORITHM_NAMES["kmeans"] and survey is None:
        raise ModelError(
            f"{model_file}: a k-means model scores users by the variance of its training "
            "users: give its training data (--data)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MODEL_FILE).write_bytes(raw)
    card = card_of(algorithm, state, sha256_of(out_dir / MODEL_FILE), survey)
    card["imported_from"] = model_file.name
    write_card_and_heatmap(card, profiles, out_dir)
    return card
