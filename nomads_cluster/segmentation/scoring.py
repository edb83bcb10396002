"""Segment scores without scikit-learn, equal to what NMF's ``transform`` computes.

``NMF.transform(x)`` solves, for the fixed components H, the non-negative least squares
problem  min_w ||x - w H||²  subject to  w >= 0  (scikit-learn runs coordinate descent
until it is close).  With few components the exact optimum is cheaper than the
iterations.  The problem is strictly convex (H has full row rank), so its optimum is
its only Karush-Kuhn-Tucker point: on some support S (a subset of the components),
w_S = (H_S H_Sᵀ)⁻¹ (H x)_S >= 0, and off S the gradient  H Hᵀ w - H x >= 0.  For each
of the 2^k supports those k numbers are linear in x, so one matrix product gives them
all; the optimum is the support whose numbers are all non-negative (the one with the
largest minimum, against rounding).

scikit-learn stops its descent close to that optimum, not on it, so where the best two
segments are nearly tied its argmax can differ from the optimum's (1,068 of the 2^26
possible users of the shipped model). Those users are scored by the same coordinate
descent as scikit-learn, one user at a time as the original service did.
`make verify` checks the whole on every possible user.
"""

import functools
from itertools import combinations

import numpy as np

# Above this many components the 2^k candidate supports stop being cheap.
MIN_COMPONENTS, MAX_COMPONENTS = 2, 10
# Gap between the best two optimal scores, relative to the best, under which the
# descent decides. transform's largest relative error on the shipped model is 7.3e-5
# over all 2^26 users; a tie can flip only within twice that.
TIE_MARGIN = 1e-3
# scikit-learn's NMF defaults, which transform uses.
CD_TOLERANCE = 1e-4
CD_MAX_ITER = 200
SCORE_BLOCK_ROWS = 16_384  # rows scored at once: intermediates of a few MB


class SegmentScorer:
    """Scores users against fixed NMF components; ``scores(X)`` equals ``NMF.transform(X)``."""

    def __init__(self, components: np.ndarray):
        components = np.asarray(components, dtype=np.float64)
        n_components = components.shape[0]
        if not MIN_COMPONENTS <= n_components <= MAX_COMPONENTS:
            raise ValueError(
                f"{n_components} components: the scorer takes {MIN_COMPONENTS} to {MAX_COMPONENTS}"
            )
        gram = components @ components.T
        if np.linalg.matrix_rank(gram) < n_components:
            raise ValueError("the components are linearly dependent: the scores are not unique")
        # Every subset of the components, the empty one (w = 0) included.
        supports = np.array(
            [
                [i in subset for i in range(n_components)]
                for size in range(n_components + 1)
                for subset in combinations(range(n_components), size)
            ]
        )
        # kkt[s] sends p = H x to: on support s the least-squares solution w, off it the
        # gradient H Hᵀ w - p.
        kkt = np.zeros((len(supports), n_components, n_components))
        identity = np.eye(n_components)
        for s, on in enumerate(supports):
            solve = np.zeros((n_components, n_components))
            solve[np.ix_(on, on)] = np.linalg.inv(gram[np.ix_(on, on)])
            kkt[s] = np.where(on[:, None], solve, gram @ solve - identity)
        self.components = components
        self.n_components = n_components
        self._supports = supports
        self._support_flags = supports.tolist()
        # x -> the k numbers of every support at once: (n_features, n_supports * k).
        self._kkt_map = (kkt @ components).transpose(2, 0, 1).reshape(components.shape[1], -1)
        # p = H x -> the j-th number of every support: (k, n_supports), for each j.
        self._kkt_rows = [np.ascontiguousarray(kkt[:, j, :].T) for j in range(n_components)]

    def scores(self, features: np.ndarray) -> np.ndarray:
        """The NMF scores (n_users, n_components) of a (n_users, n_features) 0/1 matrix.

        Equal to scikit-learn's ``transform`` of each user to within its tolerance,
        and on near ties equal to it: the argmax is always the one it gives.
        """
        scores = self.optimal_scores(features)
        ranked = np.sort(scores, axis=1)
        near_tie = is_near_tie(ranked[:, -2], ranked[:, -1])
        if near_tie.any():
            scores[near_tie] = coordinate_descent_scores(features[near_tie], self.components)
        return scores

    def score_user(self, features: np.ndarray) -> list[float]:
        """``scores`` of one user (a 1-D 0/1 vector): the request path.

        The same selection and near-tie rule as ``scores``, with the few dozen
        comparisons in plain Python: on one user, numpy's fixed cost per call, with the
        caches a web request leaves cold, outweighs the arithmetic itself. Tests hold
        the two equal.
        """
        optimum, numbers = self._optimal_support(features)
        flags = self._support_flags[optimum]
        scores = [v if on else 0.0 for v, on in zip(numbers, flags, strict=True)]
        if is_near_tie(*sorted(scores)[-2:]):
            return coordinate_descent_scores(features[None, :], self.components)[0].tolist()
        return scores

    def _optimal_support(self, features: np.ndarray) -> tuple[int, list[float]]:
        """For one user: the optimum's support (its index) and that support's k numbers."""
        k = self.n_components
        numbers = (features @ self._kkt_map).tolist()
        groups = [numbers[i : i + k] for i in range(0, len(numbers), k)]
        optimum = max(range(len(groups)), key=lambda s: min(groups[s]))  # first, as argmax
        return optimum, groups[optimum]

    def contributions(self, features: np.ndarray, segment: int) -> list[float]:
        """What each feature of one user adds to its optimal score on ``segment`` (0-based).

        On the optimum's support S the scores are linear in x: w_S = (H_S H_Sᵀ)⁻¹ H_S x,
        so feature i adds that matrix's entry (segment, i) times x_i, and the
        contributions sum to the optimal score. Negative: the feature pulls away from it.
        """
        support, _ = self._optimal_support(features)
        if not self._support_flags[support][segment]:  # its score is 0: nothing adds to it
            return [0.0] * len(features)
        column = self._kkt_map[:, support * self.n_components + segment]
        return (column * features).tolist()

    def optimal_scores(self, features: np.ndarray) -> np.ndarray:
        """The exact optimum of the non-negative least squares problem, per user.

        Through the projections p = H x (n_users x k): the KKT numbers are linear in
        p too, and that is 26/k times fewer multiplications than from x directly.
        Computed in blocks of rows, which keeps the intermediates in the caches.
        """
        if len(features) > SCORE_BLOCK_ROWS:
            return np.vstack(
                [
                    self.optimal_scores(features[start : start + SCORE_BLOCK_ROWS])
                    for start in range(0, len(features), SCORE_BLOCK_ROWS)
                ]
            )
        projections = features @ self.components.T
        # numbers[j][u, s]: the j-th KKT number of user u on support s.
        numbers = [projections @ kkt_row for kkt_row in self._kkt_rows]
        optimum = functools.reduce(np.minimum, numbers).argmax(axis=1)  # first, as argmax
        users = np.arange(len(features))
        return np.column_stack(
            [
                np.where(self._supports[optimum, j], numbers[j][users, optimum], 0.0)
                for j in range(self.n_components)
            ]
        )


def is_near_tie(second: np.ndarray | float, best: np.ndarray | float) -> np.ndarray | bool:
    """Whether the second-best score is within TIE_MARGIN of the best, for arrays or floats.

    Strictly above: a user with no interest (all scores 0) is no tie.
    """
    return second > best * (1 - TIE_MARGIN)


def coordinate_descent_scores(features: np.ndarray, components: np.ndarray) -> np.ndarray:
    """scikit-learn's ``NMF.transform`` (solver "cd") of each user on its own, vectorised.

    The same operations in the same order as scikit-learn's ``_update_cdnmf_fast`` from
    W = 0, and the same stopping rule, applied to every user separately (a batch
    transform would stop on the whole batch's progress instead).
    """
    components_t = np.ascontiguousarray(components.T)
    gram = np.dot(components_t.T, components_t)
    projections = features @ components_t
    n_users, n_components = projections.shape
    scores = np.zeros((n_users, n_components))
    running = np.arange(n_users)
    for iteration in range(1, CD_MAX_ITER + 1):
        w, p = scores[running], projections[running]
        violation = np.zeros(len(running))
        for t in range(n_components):
            grad = -p[:, t]
            for r in range(n_components):
                grad = grad + gram[t, r] * w[:, r]
            projected = np.where(w[:, t] == 0, np.minimum(0.0, grad), grad)
            violation += np.abs(projected)
            w[:, t] = np.maximum(w[:, t] - grad / gram[t, t], 0.0)
        scores[running] = w
        if iteration == 1:
            initial_violation = violation
        with np.errstate(invalid="ignore", divide="ignore"):
            going_on = (initial_violation != 0) & (violation / initial_violation > CD_TOLERANCE)
        running, initial_violation = running[going_on], initial_violation[going_on]
        if not len(running):
            break
    return scores


def assign_segments(scores: np.ndarray) -> np.ndarray:
    """Segment numbers (1-based) from scores: the original's ``argmax(transform(x)) + 1``.

    A user whose scores are all zero (no interest at all) gets segment 1, as argmax
    gives the first of equal values; callers flag such answers.
    """
    return np.asarray(scores).argmax(axis=1) + 1


class CentroidScorer:
    """Scores users against k-means centroids: the nearest centroid is the segment.

    Squared distances differ between segments only by g_c = 2 x·μ_c - ||μ_c||², which is
    linear in x. The scores are the responsibilities of equal, isotropic Gaussians of
    the training users' variance around the centroids: softmax(g / 2 var), which sum to 1
    and whose argmax is k-means' ``predict``.
    """

    def __init__(self, centers: np.ndarray, variance: float):
        self.components = np.asarray(centers, dtype=np.float64)
        self.n_components = len(self.components)
        if not MIN_COMPONENTS <= self.n_components <= MAX_COMPONENTS:
            raise ValueError(f"{self.n_components} centroids: {MIN_COMPONENTS} to {MAX_COMPONENTS}")
        if not variance > 0:
            raise ValueError("the score variance must be positive")
        self.variance = variance
        self._squared_norms = (self.components**2).sum(axis=1)

    def _closeness(self, features: np.ndarray) -> np.ndarray:
        return 2 * features @ self.components.T - self._squared_norms

    def scores(self, features: np.ndarray) -> np.ndarray:
        logits = self._closeness(features) / (2 * self.variance)
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        return weights / weights.sum(axis=1, keepdims=True)

    def score_user(self, features: np.ndarray) -> list[float]:
        return self.scores(features[None, :])[0].tolist()

    def contributions(self, features: np.ndarray, segment: int) -> list[float]:
        """What each feature adds to the logit g_segment / 2 var of ``segment`` (0-based):
        μ_segment,i x_i / var. The rest of the logit, -||μ||² / 2 var, is the same
        whatever the user chose."""
        return (self.components[segment] * features / self.variance).tolist()
