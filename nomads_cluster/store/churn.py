"""Churn: how many stored users a candidate model would move to another segment,
measured before it is promoted, without writing anything."""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..segmentation.interests import decode_masks
from ..segmentation.model import SegmentModel
from .users import UserStore

CHUNK_USERS = 50_000  # users read and scored at a time: bounded memory


@dataclass
class SegmentMoves:
    """(segment before, segment after) -> users: a churn measured, or a reassign done."""

    moves: Counter = field(default_factory=Counter)

    @property
    def users(self) -> int:
        return sum(self.moves.values())

    @property
    def changed(self) -> int:
        return sum(n for (old, new), n in self.moves.items() if old != new)

    @property
    def share(self) -> float:
        return self.changed / self.users if self.users else 0.0

    def staying(self) -> dict[int, tuple[int, int]]:
        """Per current segment: its users, and those the candidate keeps there."""
        segments = sorted({old for old, _ in self.moves})
        return {
            s: (sum(n for (old, _), n in self.moves.items() if old == s), self.moves[s, s])
            for s in segments
        }

    def as_card(self, version: str) -> dict[str, Any]:
        """The card's account: against the stored users of the served model ``version``."""
        return {
            "measured_against": version,
            "users": self.users,
            "changed": self.changed,
            "share": round(self.share, 6),
            "moves": [
                {"from": old, "to": new, "users": n} for (old, new), n in sorted(self.moves.items())
            ],
        }


def measure_churn(
    store: UserStore,
    candidate: SegmentModel,
    chunk_users: int = CHUNK_USERS,
    on_chunk: Callable[[int], None] = lambda users: None,
) -> SegmentMoves:
    """Score every stored user's interests with ``candidate`` and compare with the
    segment they were last told, a chunk at a time (``on_chunk``: users of the chunk)."""
    report, after = SegmentMoves(), 0
    while True:
        user_nos, masks, segments = store.lifecycle.current_segments(after, chunk_users)
        if not len(user_nos):
            return report
        new, _ = candidate.assign_users(decode_masks(masks))
        pairs, counts = np.unique(np.stack([segments, new], axis=1), axis=0, return_counts=True)
        report.moves.update(
            {(int(o), int(n)): int(c) for (o, n), c in zip(pairs, counts, strict=True)}
        )
        after = int(user_nos[-1])
        on_chunk(len(user_nos))
