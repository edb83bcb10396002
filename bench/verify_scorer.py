"""`make verify`: the serving scorer against scikit-learn on every possible user.

There are 2^26 possible sets of interests. For each, the scorer's segment must be the
one scikit-learn's ``transform`` gives. Scoring 67 million users one by one with
scikit-learn would take about 15 hours here, so the check goes in two steps:

1. every user: the scorer against ``coordinate_descent_scores``, the vectorised
   replica of scikit-learn's descent, which also bounds the optimum's error;
2. the replica against scikit-learn itself, user by user, on the users whose best two
   segments are the closest (where any difference would show) and on random ones.

The scorer checked is the one the service serves: the model filed in a registry (a
database of its own) and built again from the numbers filed there.
"""

import sys
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, load_model  # noqa: E402
from nomads_cluster.segmentation.scoring import (  # noqa: E402
    TIE_MARGIN,
    CentroidScorer,
    SegmentScorer,
    coordinate_descent_scores,
)
from nomads_cluster.store.engine import create_store_engine  # noqa: E402
from nomads_cluster.store.migrations import upgrade  # noqa: E402
from nomads_cluster.store.registry import ModelRegistry  # noqa: E402
from nomads_cluster.store.users import UserStore  # noqa: E402

N_FEATURES = 26
CHUNK_BITS = 20
CLOSEST = 2000  # users checked against scikit-learn itself, by closeness of their best two
RANDOM = 2000


def users_in_chunk(chunk: int) -> np.ndarray:
    """The 0/1 matrix of users chunk * 2^20 .. (chunk + 1) * 2^20 - 1 (bit i = interest i)."""
    ids = np.arange(chunk << CHUNK_BITS, (chunk + 1) << CHUNK_BITS, dtype=np.int64)
    return ((ids[:, None] >> np.arange(N_FEATURES)) & 1).astype(np.float64)


def gap_of_best_two(scores: np.ndarray) -> np.ndarray:
    best_two = np.sort(scores, axis=1)[:, -2:]
    return best_two[:, 1] - best_two[:, 0]


def served_scorer(model_dir: Path) -> SegmentScorer | CentroidScorer:
    """The model's scorer as the registry serves it: filed, then loaded from its numbers."""
    model = load_model(model_dir)
    with tempfile.TemporaryDirectory() as work_dir:
        store = UserStore(create_store_engine(f"sqlite:///{work_dir}/registry.sqlite3", 5))
        upgrade(store.engine)
        registry = ModelRegistry(store)
        registry.file(model, "make verify")
        served = registry.load(model.version)
        store.engine.dispose()
    if not np.array_equal(served.profiles, model.profiles):
        raise SystemExit("the registry's profiles differ from the model file's")
    return served.scorer


def main() -> int:
    started = time.perf_counter()
    model_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MODEL_DIR
    scorer = served_scorer(model_dir)
    estimator = joblib.load(model_dir / "model.pkl")

    disagreements, largest_error, near_ties = 0, 0.0, 0
    closest_users, closest_gaps = np.zeros((0, N_FEATURES)), np.zeros(0)
    for chunk in range(1 << (N_FEATURES - CHUNK_BITS)):
        users = users_in_chunk(chunk)
        served = scorer.scores(users)
        optimal = scorer.optimal_scores(users)
        replica = coordinate_descent_scores(users, scorer.components)
        disagreements += int((served.argmax(axis=1) != replica.argmax(axis=1)).sum())
        best = optimal.max(axis=1)
        chosen = best > 0  # the user with no interest scores 0 everywhere
        relative_error = np.abs(optimal - replica).max(axis=1)[chosen] / best[chosen]
        largest_error = max(largest_error, float(relative_error.max()))
        near_ties += int((gap_of_best_two(optimal)[chosen] <= TIE_MARGIN * best[chosen]).sum())
        gaps = gap_of_best_two(replica)
        pool_users = np.vstack([closest_users, users[chosen]])
        pool_gaps = np.concatenate([closest_gaps, gaps[chosen]])
        keep = np.argsort(pool_gaps)[:CLOSEST]
        closest_users, closest_gaps = pool_users[keep], pool_gaps[keep]

    rng = np.random.default_rng(0)
    random_users = (rng.random((RANDOM, N_FEATURES)) < rng.random((RANDOM, 1))).astype(float)
    checked = np.vstack([closest_users, random_users])
    # One user per call, as the original service did (a batch stops on the batch's progress).
    reference = np.vstack([estimator.transform(user[None, :]) for user in checked])
    sklearn_disagreements = int(
        (scorer.scores(checked).argmax(axis=1) != reference.argmax(axis=1)).sum()
    )
    replica_error = np.abs(coordinate_descent_scores(checked, scorer.components) - reference).max()

    print(f"users: {1 << N_FEATURES}; near ties scored by the descent: {near_ties}")
    print(f"segments differing from the replica of scikit-learn: {disagreements}")
    print(
        f"largest error of transform relative to the optimum: {largest_error:.2e} "
        f"(ties are decided by the descent within {TIE_MARGIN:.0e})"
    )
    print(
        f"replica vs scikit-learn on {len(checked)} users ({CLOSEST} closest ties): "
        f"largest difference {replica_error:.1e}, segments differing {sklearn_disagreements}"
    )
    print(f"done in {time.perf_counter() - started:.0f} s")
    safe = largest_error * 2 < TIE_MARGIN and replica_error < 1e-12
    return 0 if safe and disagreements == 0 and sklearn_disagreements == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
