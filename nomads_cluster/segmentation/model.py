"""The segmentation model: loading ``model.pkl`` safely, and scoring users with it.

A pickle is code, so the service unpickles ``model.pkl`` only when its sha256 matches
the model card, and even then only the few classes an NMF model file holds: the NMF
estimator is read into a plain stand-in, which also keeps scikit-learn (and its
start-up time and memory) out of the serving processes.
"""

import functools
import hashlib
import io
import logging
import os
import pickle
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler
from pydantic import ValidationError

from ..validation import error_details, summarize
from .card import ModelCard, SegmentSummary
from .interests import INTEREST_KEYS
from .scoring import CentroidScorer, SegmentScorer, assign_segments

MODEL_FILE = "model.pkl"
CARD_FILE = "model.json"
HEATMAP_FILE = "heatmap.png"
CURRENT_FILE = "CURRENT"  # in a registry of versions: the name of the one to serve
VERSION_PATTERN = re.compile(r"[0-9a-f]{12}")
TOP_REASONS = 3  # interests that explain an answer
# The working directory's model/: the repository's root, where the Procfile, the image's
# WORKDIR and the commands run; not the package's own place, which is site-packages
# once it is installed. NOMADS_MODEL_DIR names another.
DEFAULT_MODEL_DIR = Path("model").resolve()
log = logging.getLogger(__name__)


class ModelError(RuntimeError):
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

    def __init__(self, card: ModelCard, scorer: SegmentScorer | CentroidScorer, directory: Path):
        self.card, self.scorer, self.directory = card, scorer, directory
        self.numbers = tuple(segment.segment for segment in card.segments)
        self.score_keys = tuple(str(number) for number in self.numbers)  # JSON object keys
        # Component positions in segment-number order: answers list scores by number.
        self.number_order = sorted(range(len(self.numbers)), key=self.numbers.__getitem__)
        self._index = {number: i for i, number in enumerate(self.numbers)}
        self._numbers_array = np.array(self.numbers)

    @property
    def version(self) -> str:
        return self.card.version

    @functools.cached_property
    def heatmap_png(self) -> bytes | None:
        """The heatmap drawn beside the model, read once (a few dozen KB), or None."""
        try:
            return (self.directory / HEATMAP_FILE).read_bytes()
        except FileNotFoundError:
            return None

    @property
    def n_segments(self) -> int:
        return self.scorer.n_components

    def segment(self, number: int) -> SegmentSummary | None:
        index = self._index.get(number)
        return None if index is None else self.card.segments[index]

    def segment_label(self, number: int) -> str:
        return self.card.segments[self._index[number]].label

    def assign_user(self, features: np.ndarray) -> tuple[int, dict[str, float]]:
        """The segment and the scores, by segment, of one user's 26 0/1 features."""
        scores = self.scorer.score_user(features)
        best = scores.index(max(scores))  # the first best, as argmax
        return self.numbers[best], self.scores_by_number(scores)

    def scores_by_number(self, scores: Sequence[float]) -> dict[str, float]:
        """Scores in component order, as a JSON object keyed (and ordered) by number."""
        return {self.score_keys[i]: scores[i] for i in self.number_order}

    def top_interests(self, features: np.ndarray, number: int) -> list[tuple[str, float]]:
        """The user's interests that added most to the score of segment ``number``."""
        contributions = self.scorer.contributions(features, self._index[number])
        ranked = sorted(
            ((value, key) for key, value in zip(INTEREST_KEYS, contributions, strict=True)
             if value > 0.0),
            reverse=True,
        )  # fmt: skip
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
    if tuple(card.feature_columns) != INTEREST_KEYS:
        raise ModelError(f"{card_path}: feature_columns are not the 26 interests in order")
    profiles = read_profiles(raw, str(model_path), card.algorithm)
    if profiles.shape != (card.n_components, len(INTEREST_KEYS)):
        raise ModelError(f"{model_path}: profiles of shape {profiles.shape} do not fit the card")
    return SegmentModel(card=card, scorer=_scorer(card, profiles), directory=model_dir)


def current_model_dir(location: str | Path) -> Path:
    """The directory of the model to serve: ``location`` itself, or, when it is a
    registry of versions, the version its CURRENT file names."""
    location = Path(location)
    pointer = location / CURRENT_FILE
    if not pointer.exists():
        return location
    version = pointer.read_text().strip()
    if not VERSION_PATTERN.fullmatch(version):
        raise ModelError(f"{pointer} names no model version: {version!r}")
    return location / version


def promote(registry: str | Path, version: str) -> str | None:
    """Make ``version`` the registry's current model; the version it replaces.

    The model is loaded (so checked) first; CURRENT is replaced atomically, so a
    server checking it reads the old name or the new one, never half of one.
    """
    registry = Path(registry)
    if not VERSION_PATTERN.fullmatch(version):
        raise ModelError(f"{version!r} is not a model version (12 hex digits)")
    if not (registry / version).is_dir():
        filed = sorted(p.name for p in registry.iterdir() if VERSION_PATTERN.fullmatch(p.name))
        raise ModelError(
            f"{registry} has no version {version}; "
            + (f"versions there: {', '.join(filed)}" if filed else "it holds no version yet")
        )
    load_model(registry / version)
    pointer = registry / CURRENT_FILE
    previous = pointer.read_text().strip() if pointer.exists() else None
    staged = registry / f".{CURRENT_FILE}.{os.getpid()}"
    staged.write_text(version + "\n")
    os.replace(staged, pointer)
    return previous


class ModelSource:
    """The served model, which follows a registry's CURRENT file while serving.

    Each worker checks the file's identity at most every ``check_seconds``, before a
    request; when it names another version, the worker loads it and swaps it in for
    the next requests (a request in flight keeps the model it started with). A version
    that fails to load is logged and the served one stays.
    """

    def __init__(self, location: str | Path, check_seconds: float):
        self.location = Path(location)
        self.check_seconds = check_seconds
        self.model = load_model(current_model_dir(self.location))
        self._stamp = self._pointer_stamp()
        self._next_check = time.monotonic() + check_seconds

    def _pointer_stamp(self) -> tuple[int, int, int] | None:
        try:
            status = (self.location / CURRENT_FILE).stat()
        except FileNotFoundError:
            return None  # a plain model directory, or no CURRENT yet
        return status.st_ino, status.st_mtime_ns, status.st_size

    def refresh(self, force: bool = False) -> SegmentModel:
        """The model to serve now, after swapping in a newly promoted one."""
        now = time.monotonic()
        if not force and now < self._next_check:
            return self.model
        self._next_check = now + self.check_seconds
        stamp = self._pointer_stamp()
        if stamp is None or (stamp == self._stamp and not force):
            return self.model
        self._stamp = stamp
        try:
            directory = current_model_dir(self.location)
            if directory.name != self.model.version:
                previous, self.model = self.model, load_model(directory)
                log.info("now serving model %s (was %s)", self.model.version, previous.version)
        except (ModelError, OSError) as exc:
            log.error("keeping model %s: %s", self.model.version, exc)
        return self.model
