"""Drift: how the segments of recent assignments compare with those of the training users.

The measure is the population stability index, PSI = Σ (a - e) · ln(a / e) over the
segments, with e a segment's share of the training users and a its share of the recent
assignments. The usual reading, kept here: under 0.1 stable, 0.1 to 0.25 a moderate
shift, 0.25 and over a significant one (time to look at the survey, and retrain).
"""

import math
from collections.abc import Mapping

MODERATE, SIGNIFICANT = 0.1, 0.25
# A share of 0 would make the index infinite: shares are floored here.
SHARE_FLOOR = 1e-4
# Under this many assignments the shares are mostly noise: no verdict.
MIN_ASSIGNMENTS = 100
MAX_WINDOW = 1_000_000  # assignments looked at, at most
# Drift is about who signs up: assignments made for requests, not re-scoring runs.
LIVE_SOURCES = ("api", "batch")


def psi_terms(expected: Mapping[int, float], counts: Mapping[int, int]) -> dict[int, float]:
    """Each segment's term of the index: expected shares against observed counts."""
    total = sum(counts.values())
    terms = {}
    for segment, share in expected.items():
        e = max(share, SHARE_FLOOR)
        a = max(counts.get(segment, 0) / total, SHARE_FLOOR) if total else e
        terms[segment] = (a - e) * math.log(a / e)
    return terms


def verdict(psi: float | None, assignments: int) -> str:
    if psi is None or assignments < MIN_ASSIGNMENTS:
        return "insufficient data"
    if psi >= SIGNIFICANT:
        return "significant"
    return "moderate" if psi >= MODERATE else "stable"
