"""Re-scoring every stored user with the current model, in batches, resumably."""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..segmentation.interests import encode_interests
from ..segmentation.model import SegmentModel
from .churn import SegmentMoves
from .records import Assignment
from .users import UserStore

BATCH_USERS = 1000


@dataclass
class ReassignReport(SegmentMoves):
    reassigned: int = 0
    skipped: int = 0  # assigned again (or erased) while the batch was being scored


def reassign(
    store: UserStore,
    model: SegmentModel,
    batch_users: int = BATCH_USERS,
    on_batch: Callable[[ReassignReport], None] | None = None,
) -> ReassignReport:
    """Give every user whose current assignment comes from another model version the
    segment of ``model``, recorded in their history (source "reassign").

    Each batch is committed on its own. A run that stops (or is stopped) can simply be
    run again: users already on ``model`` are no longer candidates, so it goes on with
    the rest, and nobody is reassigned twice.
    """
    report = ReassignReport()
    after = None
    while batch := store.lifecycle.stale(model.version, after, batch_users):
        features = np.array([encode_interests(dict.fromkeys(r.interests, True)) for r in batch])
        segments, scores = model.assign_users(features)
        changes = [
            (
                read,
                # The room follows the segment (rooms.py).
                Assignment.scored(
                    model, read.user_id, read.interests, segment, user_scores, "reassign", read.city
                ),
            )
            for read, segment, user_scores in zip(
                batch, segments.tolist(), scores.tolist(), strict=True
            )
        ]
        applied = store.lifecycle.replace_unchanged(changes)
        report.reassigned += len(applied)
        report.skipped += len(changes) - len(applied)
        report.moves.update((read.cluster, new.cluster) for read, new in applied)
        after = str(batch[-1].user_id)
        if on_batch is not None:
            on_batch(report)
    return report
