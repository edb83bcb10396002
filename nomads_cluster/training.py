"""Training the NMF model on the survey and writing ``model.pkl`` with its card."""

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.decomposition import NMF

from .interests import INTEREST_KEYS, key_to_label
from .model import CARD_FILE, HEATMAP_FILE, MODEL_FILE, sha256_of
from .scoring import SegmentScorer, assign_segments
from .survey import Survey

N_COMPONENTS = 4
TOP_INTERESTS = 5  # interests listed per segment in the card
LABEL_INTERESTS = 3  # of which the label names the first few


def fit_nmf(features: np.ndarray, n_components: int = N_COMPONENTS) -> NMF:
    """The production model: scikit-learn 0.24's default init (nndsvd), coordinate descent."""
    model = NMF(n_components=n_components, init="nndsvd", solver="cd", random_state=42)
    return model.fit(features)


def describe_segments(components: np.ndarray, assignments: np.ndarray) -> list[dict[str, Any]]:
    """Per segment: a label from its top interests, their weights, its share of users."""
    shares = np.bincount(assignments, minlength=len(components) + 1)[1:] / len(assignments)
    segments = []
    for index, weights in enumerate(components):
        top = np.argsort(-weights, kind="stable")[:TOP_INTERESTS]
        segments.append(
            {
                "segment": index + 1,
                "label": ", ".join(INTEREST_KEYS[i] for i in top[:LABEL_INTERESTS]),
                "top_interests": [
                    {"interest": INTEREST_KEYS[i], "weight": round(float(weights[i]), 6)}
                    for i in top
                ],
                "share": round(float(shares[index]), 6),
            }
        )
    return segments


def build_card(model: NMF, survey: Survey, model_sha256: str) -> dict[str, Any]:
    assignments = assign_segments(SegmentScorer(model.components_).scores(survey.features))
    return {
        "version": model_sha256[:12],
        "algorithm": "sklearn.decomposition.NMF",
        "parameters": {k: model.get_params()[k] for k in ("init", "solver", "random_state")},
        "feature_columns": list(INTEREST_KEYS),
        "n_components": int(model.n_components_),
        "sklearn_version": sklearn.__version__,
        "model_sha256": model_sha256,
        "training_data": {
            "file": survey.source,
            "sha256": survey.sha256,
            "rows": survey.n_rows,
        },
        "reconstruction_error": round(float(model.reconstruction_err_), 9),
        "n_iter": int(model.n_iter_),
        "segments": describe_segments(model.components_, assignments),
    }


def draw_heatmap(components: np.ndarray, labels: list[str], path: str | Path) -> None:
    """The picture the team shows: segments by interests, each cell the component's value."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, and no GUI toolkit to import
    from matplotlib import pyplot as plt

    n_segments = len(components)
    figure, axes = plt.subplots(figsize=(11, 1.6 + 0.6 * n_segments), layout="constrained")
    image = axes.imshow(components, cmap="YlGnBu", aspect="auto", vmin=0)
    axes.set_xticks(
        range(len(INTEREST_KEYS)),
        [key_to_label(k) for k in INTEREST_KEYS],
        rotation=50,
        ha="right",
        rotation_mode="anchor",
    )
    axes.set_yticks(range(n_segments), [f"{i + 1}: {label}" for i, label in enumerate(labels)])
    axes.set_xlabel("interest")
    axes.set_title("What each segment is made of (NMF components)")
    figure.colorbar(image, ax=axes, label="weight", shrink=0.9)
    # No timestamp or software version in the file: the same model draws the same bytes.
    figure.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(figure)


def train(survey: Survey, out_dir: str | Path) -> dict[str, Any]:
    """Fit the model on the survey, write model.pkl, model.json and heatmap.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = fit_nmf(survey.features)
    model_path = out_dir / MODEL_FILE
    joblib.dump(model, model_path)
    card = build_card(model, survey, sha256_of(model_path))
    (out_dir / CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    draw_heatmap(model.components_, [s["label"] for s in card["segments"]], out_dir / HEATMAP_FILE)
    return card
