"""Users' assignments: each one made current and added to the history (with its room
and its events of the change feed), read back, and erased."""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa

from .database import Database
from .events import add_events, erasure_event
from .records import Assignment
from .rooms import PlacedRoom
from .tables import assignment_history, assignments
from .writes import assignment_writer, take_changes_lock


class Assignments:
    """The current assignment of each user, and the history of every one made."""

    def __init__(self, database: Database, room_size: int):
        self.database = database
        self.room_size = room_size
        self._writer = assignment_writer(database.engine.dialect)

    def save(self, records: Sequence[Assignment]) -> list[PlacedRoom | None]:
        """Make each record its user's current assignment and add it to the history,
        all in one transaction. Of several records of one user, the last is current.
        Users with a city are placed in rooms (``rooms.py``); their rooms, in order."""
        if not records:
            return []
        rows = [record.as_row() for record in records]
        return self.database.run(
            lambda conn: self._writer.write(conn, rows, self.room_size),
            write=True,
            autocommit=self._writer.one_statement(rows),
        )

    def current(self, user_id: str) -> Assignment | None:
        query = sa.select(assignments).where(assignments.c.user_id == user_id)
        row = self.database.run(lambda conn: conn.execute(query).first(), write=False)
        return None if row is None else Assignment.from_row(row)

    def history(self, user_id: str, limit: int) -> list[Assignment]:
        """The user's assignments, newest first."""
        query = (
            sa.select(assignment_history)
            .where(assignment_history.c.user_id == user_id)
            .order_by(assignment_history.c.id.desc())
            .limit(limit)
        )
        rows = self.database.run(lambda conn: conn.execute(query).all(), write=False)
        return [Assignment.from_row(row) for row in rows]

    def erase(self, user_id: str) -> bool:
        """Delete the user and the history; False when the store holds nothing of them."""

        def work(conn: sa.Connection) -> int:
            take_changes_lock(conn)
            erased = conn.execute(
                assignments.delete()
                .where(assignments.c.user_id == user_id)
                .returning(assignments.c.cluster, assignments.c.room_id)
            ).first()
            gone = conn.execute(
                assignment_history.delete().where(assignment_history.c.user_id == user_id)
            )
            if erased is not None:
                add_events(conn, [erasure_event(user_id, tuple(erased), datetime.now(UTC))])
            return (erased is not None) + gone.rowcount

        return self.database.run(work, write=True) > 0
