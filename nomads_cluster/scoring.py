"""Segment scores without scikit-learn: the exact solution of NMF's ``transform``.

``NMF.transform(x)`` solves, for the fixed components H, the non-negative least squares
problem  min_w ||x - w H||²  subject to  w >= 0  (scikit-learn runs coordinate descent
until it is close).  With few components the exact optimum is cheaper than the
iterations: the problem is strictly convex (H has full row rank), so its optimum is the
unconstrained least-squares solution on its own support.  For every support S (every
subset of the components) that solution is linear in x,  w_S = (H_S H_Sᵀ)⁻¹ H_S x,  and
the optimum is the feasible (w_S >= 0) candidate with the lowest objective, which at
such a point equals  -½ w·(H x).  Precomputing the 2^k linear maps turns scoring into
one matrix product and a few comparisons, for one user or a million.
"""

from itertools import combinations

import numpy as np

# Above this many components the 2^k candidate supports stop being cheap.
MAX_COMPONENTS = 10


class SegmentScorer:
    """Scores users against fixed NMF components; ``scores(X)`` equals ``NMF.transform(X)``."""

    def __init__(self, components: np.ndarray):
        components = np.asarray(components, dtype=np.float64)
        n_components, n_features = components.shape
        if not 1 <= n_components <= MAX_COMPONENTS:
            raise ValueError(f"{n_components} components: the scorer handles 1 to {MAX_COMPONENTS}")
        gram = components @ components.T
        if np.linalg.matrix_rank(gram) < n_components:
            raise ValueError("the components are linearly dependent: the scores are not unique")
        # Every subset of the components, the empty one (w = 0) included.
        supports = [
            list(support)
            for size in range(n_components + 1)
            for support in combinations(range(n_components), size)
        ]
        # maps[s] sends x to the least-squares solution restricted to support s.
        maps = np.zeros((len(supports), n_components, n_features))
        for s, support in enumerate(supports):
            maps[s, support] = np.linalg.solve(gram[np.ix_(support, support)], components[support])
        self.components = components
        self.n_components = n_components
        self._n_supports = len(supports)
        self._candidate_map = maps.reshape(-1, n_features).T  # (n_features, n_supports * k)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """The NMF scores (n_users, n_components) of a (n_users, n_features) 0/1 matrix."""
        features = np.atleast_2d(features)
        n_users = features.shape[0]
        candidates = (features @ self._candidate_map).reshape(
            n_users, self._n_supports, self.n_components
        )
        projections = features @ self.components.T  # H x, (n_users, k)
        objective = -0.5 * np.einsum("usk,uk->us", candidates, projections)
        # An infeasible candidate never wins; the empty support (w = 0) is always feasible.
        objective[(candidates < 0).any(axis=2)] = np.inf
        return candidates[np.arange(n_users), objective.argmin(axis=1)]


def assign_segments(scores: np.ndarray) -> np.ndarray:
    """Segment numbers (1-based) from scores: the original's ``argmax(transform(x)) + 1``.

    A user whose scores are all zero (no interest at all) gets segment 1, as argmax
    gives the first of equal values; callers flag such answers.
    """
    return np.asarray(scores).argmax(axis=1) + 1
