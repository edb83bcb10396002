"""What the model's lifecycle reads and writes of the stored users: the users a new
version has not scored yet and their re-scoring (``reassign.py``), every user's segment
for the churn of a candidate (``churn.py``), and the latest segments for drift."""

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import sqlalchemy as sa

from .database import Database
from .events import add_events, change_events
from .records import Assignment, current_page
from .rooms import place_in_rooms
from .tables import assignment_history, assignments
from .writes import INTEREST_SET, next_seq, take_changes_lock


class Lifecycle:
    def __init__(self, database: Database, room_size: int):
        self.database = database
        self.room_size = room_size

    def stale(self, model_version: str, after: str | None, limit: int) -> list[Assignment]:
        """Up to ``limit`` current assignments made by another model version, in user id
        order, after the user id ``after``."""
        condition = assignments.c.model_version != model_version
        return current_page(self.database, condition, after, limit)

    def replace_unchanged(
        self, changes: Sequence[tuple[Assignment, Assignment]]
    ) -> list[tuple[Assignment, Assignment]]:
        """For each (read, new) pair, make ``new`` the user's current assignment and add
        it to the history, unless the current one is no longer ``read`` (assigned again
        or erased since it was read). One transaction; the pairs applied."""

        def work(conn: sa.Connection) -> list[tuple[Assignment, Assignment]]:
            take_changes_lock(conn)
            rows = [new.as_row() for _, new in changes]
            place_in_rooms(conn, rows, self.room_size)
            applied = []
            for (read, new), row in zip(changes, rows, strict=True):
                same_set = sa.and_(  # no new change number for an unchanged set (writes.py)
                    *(assignments.c[name].is_not_distinct_from(row[name]) for name in INTEREST_SET)
                )
                update = (
                    assignments.update()
                    .where(assignments.c.user_id == row.pop("user_id"))
                    .where(assignments.c.assigned_at == read.assigned_at)
                    .where(assignments.c.model_version == read.model_version)
                    .values(
                        **row,
                        seq=sa.case((same_set, assignments.c.seq), else_=next_seq(conn.dialect)),
                    )
                )
                if conn.execute(update).rowcount:
                    applied.append((read, replace(new, room_id=row["room_id"])))
            if applied:
                written = [new.as_row() for _, new in applied]
                conn.execute(assignment_history.insert(), written)
                before = {str(read.user_id): (read.cluster, read.room_id) for read, _ in applied}
                add_events(conn, change_events(before, written))
            return applied

        return self.database.run(work, write=True)

    def recent_segments(
        self, model_version: str, window: int, sources: Sequence[str]
    ) -> dict[int, int]:
        """Segment -> count among the latest ``window`` assignments by ``model_version``
        from ``sources``."""
        latest = (
            sa.select(assignment_history.c.cluster)
            .where(assignment_history.c.model_version == model_version)
            .where(assignment_history.c.source.in_(sources))
            .order_by(assignment_history.c.id.desc())
            .limit(window)
            .subquery()
        )
        query = sa.select(latest.c.cluster, sa.func.count()).group_by(latest.c.cluster)
        rows = self.database.run(lambda conn: conn.execute(query).all(), write=False)
        return {segment: count for segment, count in rows}

    def current_segments(
        self, after_user_no: int, limit: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to ``limit`` users after the user number ``after_user_no``, in that order:
        their numbers, interest masks and current segments."""
        query = (
            sa.select(assignments.c.user_no, assignments.c.interest_mask, assignments.c.cluster)
            .where(assignments.c.user_no > after_user_no)
            .order_by(assignments.c.user_no)
            .limit(limit)
        )
        rows = self.database.run(lambda conn: conn.execute(query).all(), write=False)
        columns = np.array(rows, dtype=np.int64).reshape(len(rows), 3)
        return columns[:, 0], columns[:, 1], columns[:, 2]

    def count_users(self) -> int:
        query = sa.select(sa.func.count()).select_from(assignments)
        return self.database.run(lambda conn: conn.execute(query).scalar_one(), write=False)
