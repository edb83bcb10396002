"""Fitting the segments: the production NMF and the k-means alternative, seeded."""

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import NMF

N_COMPONENTS = 4


def fit_nmf(features: np.ndarray, n_components: int = N_COMPONENTS) -> NMF:
    """The production model: scikit-learn 0.24's default init (nndsvd), coordinate descent."""
    model = NMF(n_components=n_components, init="nndsvd", solver="cd", random_state=42)
    return model.fit(features)


def fit_kmeans(features: np.ndarray, n_components: int = N_COMPONENTS) -> KMeans:
    """The k-means alternative: the best of 10 k-means++ starts, seeded."""
    return KMeans(n_clusters=n_components, n_init=10, random_state=42).fit(features)


FIT = {"nmf": fit_nmf, "kmeans": fit_kmeans}
