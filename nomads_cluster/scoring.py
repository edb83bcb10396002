"""Segment scores without scikit-learn: the exact solution of NMF's ``transform``.

``NMF.transform(x)`` solves, for the fixed components H, the non-negative least squares
problem  min_w ||x - w H||²  subject to  w >= 0  (scikit-learn runs coordinate descent
until it is close).  With few components the exact optimum is cheaper than the
iterations: the problem is strictly convex (H has full row rank), so its optimum is the
unconstrained least-squares solution on its own support.  For every support S (every
subset of the components) that solution is  w_S = (H_S H_Sᵀ)⁻¹ (H x)_S,  linear in
p = H x, and the optimum is the feasible (w_S >= 0) candidate with the lowest objective,
which at such a point equals  -½ w·p.  Precomputing the 2^k small inverses turns
scoring into two small matrix products and a few comparisons, for one user or a million.
"""

from itertools import combinations

import numpy as np

# Above this many components the 2^k candidate supports stop being cheap.
MAX_COMPONENTS = 10


class SegmentScorer:
    """Scores users against fixed NMF components; ``scores(X)`` equals ``NMF.transform(X)``."""

    def __init__(self, components: np.ndarray):
        components = np.asarray(components, dtype=np.float64)
        n_components = components.shape[0]
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
        # inverses[s] sends p = H x to the least-squares solution on support s.
        inverses = np.zeros((len(supports), n_components, n_components))
        for s, support in enumerate(supports):
            inverses[s][np.ix_(support, support)] = np.linalg.inv(gram[np.ix_(support, support)])
        self.components = components
        self.n_components = n_components
        self._n_supports = len(supports)
        self._components_t = np.ascontiguousarray(components.T)  # (n_features, k)
        self._candidate_map = inverses.transpose(1, 0, 2).reshape(n_components, -1)  # (k, s * k)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """The NMF scores (n_users, n_components) of a (n_users, n_features) 0/1 matrix."""
        projections = np.atleast_2d(features) @ self._components_t  # p = H x, (n_users, k)
        n_users = projections.shape[0]
        candidates = (projections @ self._candidate_map).reshape(
            n_users, self._n_supports, self.n_components
        )
        objective = -0.5 * (candidates @ projections[:, :, None])[:, :, 0]
        # An infeasible candidate never wins; the empty support (w = 0) is always feasible.
        objective[(candidates < 0).any(axis=2)] = np.inf
        return candidates[np.arange(n_users), objective.argmin(axis=1)]


def assign_segments(scores: np.ndarray) -> np.ndarray:
    """Segment numbers (1-based) from scores: the original's ``argmax(transform(x)) + 1``.

    A user whose scores are all zero (no interest at all) gets segment 1, as argmax
    gives the first of equal values; callers flag such answers.
    """
    return np.asarray(scores).argmax(axis=1) + 1
