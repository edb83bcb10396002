"""Fitting the segments: the production NMF and the k-means alternative, seeded."""

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import NMF

from .card import DEFAULT_ANCHOR

N_COMPONENTS = 4


def fit_nmf(features: np.ndarray, n_components: int = N_COMPONENTS) -> NMF:
    """The production model: scikit-learn 0.24's default init (nndsvd), coordinate descent."""
    model = NMF(n_components=n_components, init="nndsvd", solver="cd", random_state=42)
    return model.fit(features)


def fit_kmeans(features: np.ndarray, n_components: int = N_COMPONENTS) -> KMeans:
    """The k-means alternative: the best of 10 k-means++ starts, seeded."""
    return KMeans(n_clusters=n_components, n_init=10, random_state=42).fit(features)


FIT = {"nmf": fit_nmf, "kmeans": fit_kmeans}


ANCHORED_MAX_ITER = 5000
ANCHORED_TOL = 1e-9  # relative decrease of the objective at which the updates stop


def anchored_updates(
    features: np.ndarray, anchor_components: np.ndarray, anchor: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """W, H and the iterations of min ||X - WH||² + anchor·n·||H - H_prev||², W, H >= 0.

    Multiplicative updates (Lee and Seung's, with the anchor's gradient split by
    sign), from H_prev and the exact scores of the users on it: trained on the data
    that made H_prev, they stay there.
    """
    from .scoring import SegmentScorer

    weight = anchor * len(features)
    tiny = np.finfo(np.float64).tiny
    H = anchor_components.astype(np.float64).copy()
    # Multiplicative updates never leave 0: start every score a hair above it.
    W = np.maximum(SegmentScorer(H).scores(features), 1e-9)
    last, iterations = np.inf, 0
    while iterations < ANCHORED_MAX_ITER:
        iterations += 1
        W *= (features @ H.T) / (W @ (H @ H.T) + tiny)
        H *= (W.T @ features + weight * anchor_components) / ((W.T @ W) @ H + weight * H + tiny)
        objective = np.sum((features - W @ H) ** 2) + weight * np.sum((H - anchor_components) ** 2)
        if last - objective < ANCHORED_TOL * objective:
            break
        last = objective
    return W, H, iterations


def fit_anchored_nmf(
    features: np.ndarray, anchor_components: np.ndarray, anchor: float = DEFAULT_ANCHOR
) -> NMF:
    """An NMF kept near ``anchor_components`` (anchored_updates), as the scikit-learn
    estimator a cold fit gives: it transforms, pickles and is served alike."""
    W, H, iterations = anchored_updates(features, anchor_components, anchor)
    # solver="cd": what transform() uses, as for a cold fit (the fit itself is above).
    model = NMF(n_components=len(H), init="custom", solver="cd", random_state=42)
    model.n_features_in_ = features.shape[1]
    model.components_ = H
    model.n_components_ = len(H)
    model.reconstruction_err_ = float(np.linalg.norm(features - W @ H))
    model.n_iter_ = iterations
    return model
