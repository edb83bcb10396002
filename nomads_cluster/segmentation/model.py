"""The segmentation model: loading ``model.pkl`` safely, and scoring users with it.

The service serves the versions filed in its database's registry
(``store/registry.py``), built from their profiles as numbers by
``model_from_profiles``; a model directory (model.pkl, model.json) is what training
writes and what the registry files.

A pickle is code, so the service unpickles ``model.pkl`` only when its sha256 matches
the model card, and even then only the few classes an NMF model file holds: the NMF
estimator is read into a plain stand-in, which also keeps scikit-learn (and its
start-up time and memory) out of the serving processes.
"""

import hashlib
import io
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler
from pydantic import ValidationError

from ..errors import ServiceError
from ..validation import error_details, summarize
from .card import ModelCard, SegmentSummary
from .interests import INTEREST_KEYS
from .scoring import CentroidScorer, SegmentScorer, assign_segments

MODEL_FILE = "model.pkl"
CARD_FILE = "model.json"
HEATMAP_FILE = "heatmap.png"
VERSION_PATTERN = re.compile(r"[0-9a-f]{12}")
TOP_REASONS = 3  # interests that explain an answer
# The committed model: the working directory's model/, the repository's root where the
# Procfile, the image's WORKDIR and the release phase run; not the package's own place,
# which is site-packages once it is installed. The registry files it on a database that
# serves no version yet; NOMADS_MODEL_DIR names another.
DEFAULT_MODEL_DIR = Path("model").resolve()


class ModelError(ServiceError, RuntimeError):
    """The model directory cannot be served; the message says why, in one line."""


class _EstimatorState:
    """Stand-in for a pickled estimator class: keeps its attributes, runs nothing."""

    kind = ""  # the card's name of the algorithm

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.state = state


class _NMFState(_EstimatorState):
    kind = "sklearn.decomposition.NMF"


class _KMeansState(_EstimatorState):
    kind = "sklearn.cluster.KMeans"


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("sklearn.decomposition._nmf", "NMF"): _NMFState,
    ("sklearn.cluster._kmeans", "KMeans"): _KMeansState,
    ("joblib.numpy_pickle", "NumpyArrayWrapper"): NumpyArrayWrapper,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,
}


class _ModelUnpickler(NumpyUnpickler):
    """joblib's unpickler, restricted to the globals an NMF model file needs."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(
                f"{module}.{name} is not allowed in a model file"
            ) from None


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# What each kind of model file holds: the card's algorithm -> the fitted attribute.
FITTED_ATTRIBUTE = {
    "sklearn.decomposition.NMF": "components_",
    "sklearn.cluster.KMeans": "cluster_centers_",
}


def _unpickle(raw: bytes, origin: str) -> _EstimatorState:
    try:
        estimator = _ModelUnpickler(origin, io.BytesIO(raw), ensure_native_byte_order=True).load()
    except Exception as exc:  # any failure to read is the same refusal
        raise ModelError(f"{origin}: cannot be read as a model ({exc})") from None
    if not isinstance(estimator, _EstimatorState):
        raise ModelError(f"{origin}: does not hold a fitted {' or '.join(FITTED_ATTRIBUTE)} model")
    return estimator


def read_profiles(raw: bytes, origin: str, algorithm: str) -> np.ndarray:
    """The segments' interest profiles (NMF components, k-means centroids) stored in
    the bytes of a joblib ``model.pkl``."""
    attribute = FITTED_ATTRIBUTE.get(algorithm)
    if attribute is None:
        raise ModelError(f"{origin}: the card's algorithm {algorithm!r} is not served")
    estimator = _unpickle(raw, origin)
    if estimator.kind != algorithm or attribute not in estimator.state:
        raise ModelError(f"{origin}: does not hold a fitted {algorithm} model")
    return np.asarray(estimator.state[attribute], dtype=np.float64)


def read_model_file(raw: bytes, origin: str) -> tuple[str, dict[str, Any]]:
    """The algorithm and the fitted attributes of a joblib model file made anywhere
    (``import-model``), read by the same restricted unpickler."""
    estimator = _unpickle(raw, origin)
    if FITTED_ATTRIBUTE[estimator.kind] not in estimator.state:
        raise ModelError(f"{origin}: its {estimator.kind} model was never fitted")
    return estimator.kind, estimator.state


def _scorer(card: ModelCard, profiles: np.ndarray) -> SegmentScorer | CentroidScorer:
    if card.algorithm == "sklearn.cluster.KMeans":
        if card.score_variance is None:
            raise ModelError("a k-means card needs its score_variance")
        return CentroidScorer(profiles, card.score_variance)
    return SegmentScorer(profiles)


class SegmentModel:
    """A loaded model: its card, and the scorer built from its components.

    Component i is segment ``numbers[i]``: retraining with ``--previous`` keeps the
    numbers the app knows, so they need not be 1..n in component order.
    """

    def __init__(
        self,
        card: ModelCard,
        scorer: SegmentScorer | CentroidScorer,
        heatmap_png: bytes | None = None,
    ):
        self.card, self.scorer = card, scorer
        self.heatmap_png = heatmap_png  # the heatmap drawn with the model, if any
        self.numbers = tuple(segment.segment for segment in card.segments)
        self.score_keys = tuple(str(number) for number in self.numbers)  # JSON object keys
        # Component positions in segment-number order: answers list scores by number.
        self.number_order = sorted(range(len(self.numbers)), key=self.numbers.__getitem__)
        self._index = {number: i for i, number in enumerate(self.numbers)}
        self._numbers_array = np.array(self.numbers)

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def profiles(self) -> np.ndarray:
        """The segments' interest profiles (NMF components, k-means centroids)."""
        return self.scorer.components

    @property
    def n_segments(self) -> int:
        return self.scorer.n_components

    def segment(self, number: int) -> SegmentSummary | None:
        index = self._index.get(number)
        return None if index is None else self.card.segments[index]

    def segment_label(self, number: int) -> str:
        return self.card.segments[self._index[number]].label

    def assign_user(self, features: np.ndarray) -> tuple[int, list[float]]:
        """The segment and the scores (in component order, as ``assign_users``' columns)
        of one user's 26 0/1 features."""
        scores = self.scorer.score_user(features)
        best = scores.index(max(scores))  # the first best, as argmax
        return self.numbers[best], scores

    def scores_by_number(self, scores: Sequence[float]) -> dict[str, float]:
        """Scores in component order, as a JSON object keyed (and ordered) by number."""
        return {self.score_keys[i]: scores[i] for i in self.number_order}

    def top_interests(self, features: np.ndarray, number: int) -> list[tuple[str, float]]:
        """The user's interests that added most to the score of segment ``number``."""
        contributions = self.scorer.contributions(features, self._index[number])
        ranked = sorted(
            (
                (value, key)
                for key, value in zip(INTEREST_KEYS, contributions, strict=True)
                if value > 0.0
            ),
            reverse=True,
        )
        return [(key, value) for value, key in ranked[:TOP_REASONS]]

    def assign_users(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The segments and scores (columns in ``numbers`` order) of a (n_users, 26) matrix."""
        scores = self.scorer.scores(features)
        return self._numbers_array[assign_segments(scores) - 1], scores


def load_model(model_dir: str | Path) -> SegmentModel:
    """Load ``model.pkl`` after checking it against the card ``model.json`` beside it."""
    model_dir = Path(model_dir)
    card_path, model_path = model_dir / CARD_FILE, model_dir / MODEL_FILE
    try:
        card = ModelCard.model_validate_json(card_path.read_bytes())
        raw = model_path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read the model in {model_dir}: {exc}") from None
    except ValidationError as exc:
        raise ModelError(
            f"{card_path} is not a model card: {summarize(error_details(exc))}"
        ) from None
    actual = hashlib.sha256(raw).hexdigest()
    expected = card.model_sha256
    if actual != expected:
        raise ModelError(
            f"refusing to unpickle {model_path}: its sha256 {actual} differs from "
            f"{expected} in {card_path.name}"
        )
    profiles = read_profiles(raw, str(model_path), card.algorithm)
    try:
        heatmap_png = (model_dir / HEATMAP_FILE).read_bytes()
    except FileNotFoundError:
        heatmap_png = None
    return model_from_profiles(card, profiles, heatmap_png, str(model_dir))


def model_from_profiles(
    card: ModelCard, profiles: np.ndarray, heatmap_png: bytes | None, origin: str
) -> SegmentModel:
    """A model from its card and its segments' profiles as numbers: what a model
    directory's pickle holds, and what the registry files."""
    if card.algorithm not in FITTED_ATTRIBUTE:
        raise ModelError(f"{origin}: the card's algorithm {card.algorithm!r} is not served")
    if tuple(card.feature_columns) != INTEREST_KEYS:
        raise ModelError(f"{origin}: feature_columns are not the 26 interests in order")
    # One memory layout whatever the source (a pickle's arrays are often Fortran-ordered):
    # the scorer's matrix products, and so its last bits, are then the same.
    profiles = np.ascontiguousarray(profiles, dtype=np.float64)
    if profiles.shape != (card.n_components, len(INTEREST_KEYS)):
        raise ModelError(f"{origin}: profiles of shape {profiles.shape} do not fit the card")
    try:
        scorer = _scorer(card, profiles)
    except ValueError as exc:
        raise ModelError(f"{origin}: {exc}") from None
    return SegmentModel(card=card, scorer=scorer, heatmap_png=heatmap_png)
