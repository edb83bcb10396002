"""An assignment as the store keeps it, made from a model's answer in one place
(``scored``), and read back a page at a time (``current_page``)."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from ..cities import city_key
from ..segmentation.interests import INTEREST_KEYS, interest_mask
from ..segmentation.model import SegmentModel
from .database import Database
from .engine import as_utc
from .tables import assignments


@dataclass(frozen=True)
class Assignment:
    """One user's segment as the service told it."""

    user_id: str | int
    interests: tuple[str, ...]  # the chosen interest keys, in INTEREST_KEYS order
    cluster: int
    scores: dict[str, float]  # by segment number, as JSON object keys
    model_version: str
    assigned_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    source: str = "api"
    city: str | None = None  # as displayed (cities.display_city)
    room_id: str | None = None  # given by the store when it is saved with a city

    def as_row(self) -> dict[str, Any]:
        """The row of both tables (the history ignores city_key and interest_mask)."""
        return {
            "user_id": str(self.user_id),
            "id_is_int": isinstance(self.user_id, int),
            "interests": list(self.interests),
            "cluster": self.cluster,
            "scores": self.scores,
            "model_version": self.model_version,
            "assigned_at": self.assigned_at,
            "source": self.source,
            "city": self.city,
            "room_id": self.room_id,
            "city_key": None if self.city is None else city_key(self.city),
            "interest_mask": interest_mask(self.interests),
        }

    @classmethod
    def from_row(cls, row: sa.Row) -> "Assignment":
        return cls(
            user_id=int(row.user_id) if row.id_is_int else row.user_id,
            interests=tuple(row.interests),
            cluster=row.cluster,
            scores=row.scores,
            model_version=row.model_version,
            assigned_at=as_utc(row.assigned_at),
            source=row.source,
            city=row.city,
            room_id=row.room_id,
        )

    @classmethod
    def scored(
        cls,
        model: SegmentModel,
        user_id: str | int,
        interests: tuple[str, ...],
        segment: int,
        scores: Sequence[float],
        source: str,
        city: str | None = None,
    ) -> "Assignment":
        """The assignment ``model`` gives a user: its segment, its scores (in the
        model's component order) and its version."""
        return cls(
            user_id=user_id,
            interests=interests,
            cluster=int(segment),
            scores=model.scores_by_number(scores),
            model_version=model.version,
            source=source,
            city=city,
        )


def chosen_interests(features: np.ndarray | Sequence[float]) -> tuple[str, ...]:
    """The interest keys of a 0/1 feature vector."""
    return tuple(key for key, value in zip(INTEREST_KEYS, features, strict=True) if value)


def current_page(
    database: Database, condition: sa.ColumnElement[bool], after: str | None, limit: int
) -> list[Assignment]:
    """Up to ``limit`` current assignments meeting ``condition``, in user id order,
    after the user id ``after`` (a keyset page)."""
    query = sa.select(assignments).where(condition).order_by(assignments.c.user_id)
    if after is not None:
        query = query.where(assignments.c.user_id > after)
    rows = database.run(lambda conn: conn.execute(query.limit(limit)).all(), write=False)
    return [Assignment.from_row(row) for row in rows]
