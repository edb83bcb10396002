"""The user store: every assignment made, the current one per user, and survey answers.

SQLAlchemy Core on SQLite (the embedded default, in the instance folder) or PostgreSQL
through psycopg 3 (``engine.py``). The schema is Alembic's (``migrations/``): applied by
``nomads-cluster db upgrade``, and at start-up when the database is empty.
"""

from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from flask import Flask, current_app
from sqlalchemy.engine import Engine

from ..cities import city_key
from ..metrics.registry import Counter
from ..segmentation.interests import INTEREST_KEYS, encode_interests, interest_mask
from .engine import (
    UNAVAILABLE_ERRORS,
    StoreUnavailable,
    as_utc,
    create_store_engine,
    writer_lock,
)
from .events import add_events, change_events, erasure_event
from .neighbours import Neighbour, NeighbourIndex
from .rooms import PlacedRoom, place_in_rooms, room_counts, room_to_join
from .tables import assignment_history, assignments, store_state, survey_responses
from .writes import assignment_writer, next_seq, take_changes_lock

SQLITE_FILE = "nomads.sqlite3"
# A write PostgreSQL chose to fail so that another could go on (deadlock_detected) was
# rolled back whole: it is run again. (Writes lock in one order, writes.py: none is
# known to deadlock; this is the net under that rule.)
DEADLOCK_SQLSTATE = "40P01"
WRITE_ATTEMPTS = 3


ASSIGNMENTS = Counter(
    "nomads_assignments", "Users assigned and stored, by segment.", ["segment", "source"]
)
STORE_ERRORS = Counter("nomads_store_errors", "Requests that found the store unavailable.")


def count_assignments(segments: Iterable[int], source: str) -> None:
    for segment in segments:
        ASSIGNMENTS.labels(segment=str(segment), source=source).inc()


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


def chosen_interests(features: np.ndarray) -> tuple[str, ...]:
    """The interest keys of a 0/1 feature vector."""
    return tuple(key for key, value in zip(INTEREST_KEYS, features, strict=True) if value)


class UserStore:
    """Reads and writes of the store; database failures come out as StoreUnavailable."""

    def __init__(self, engine: Engine, timeout: float = 3, room_size: int = 250):
        self.engine = engine
        self.room_size = room_size
        self.schema_revision: str | None = None  # as found at start-up (open_store)
        self._neighbours = NeighbourIndex()
        self._writer_lock = writer_lock(engine, timeout)
        # Upserts and insert-or-skip are dialect-specific statements.
        if engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        self.insert = insert  # the dialect's INSERT, which has ON CONFLICT
        self._writer = assignment_writer(engine.dialect)
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def _connection(self, write: bool, autocommit: bool) -> Any:
        if autocommit:
            return self._autocommit.connect()
        return self.engine.begin() if write else self.engine.connect()

    def run(self, work: Any, *, write: bool, autocommit: bool = False) -> Any:
        """``work(connection)``, in a transaction if it writes; without one if it is a
        single statement (``autocommit``: atomic alone, and no BEGIN and COMMIT)."""
        attempts = 1
        while True:
            exclusive = self._writer_lock.held() if write and self._writer_lock else nullcontext()
            try:
                with exclusive, self._connection(write, autocommit) as conn:
                    return work(conn)
            except UNAVAILABLE_ERRORS as exc:
                deadlock = getattr(exc.orig, "sqlstate", None) == DEADLOCK_SQLSTATE
                if not (write and deadlock and attempts < WRITE_ATTEMPTS):
                    raise StoreUnavailable(
                        f"the database is unavailable ({type(exc.orig or exc).__name__})"
                    ) from exc
                attempts += 1

    def save(self, records: Sequence[Assignment]) -> list[PlacedRoom | None]:
        """Make each record its user's current assignment and add it to the history,
        all in one transaction. Of several records of one user, the last is current.
        Users with a city are placed in rooms (``rooms.py``); their rooms, in order."""
        if not records:
            return []
        rows = [record.as_row() for record in records]
        write = self._writer.write
        if not any(row["city_key"] for row in rows):
            self.run(
                lambda conn: write(conn, rows), write=True, autocommit=self._writer.one_statement
            )
            return [None] * len(rows)

        def work(conn: sa.Connection) -> list[PlacedRoom | None]:
            placed = place_in_rooms(conn, rows, self.room_size)
            write(conn, rows)
            return placed

        return self.run(work, write=True)

    def current(self, user_id: str) -> Assignment | None:
        query = sa.select(assignments).where(assignments.c.user_id == user_id)
        row = self.run(lambda conn: conn.execute(query).first(), write=False)
        return None if row is None else Assignment.from_row(row)

    def history(self, user_id: str, limit: int) -> list[Assignment]:
        """The user's assignments, newest first."""
        query = (
            sa.select(assignment_history)
            .where(assignment_history.c.user_id == user_id)
            .order_by(assignment_history.c.id.desc())
            .limit(limit)
        )
        rows = self.run(lambda conn: conn.execute(query).all(), write=False)
        return [Assignment.from_row(row) for row in rows]

    def stale(self, model_version: str, after: str | None, limit: int) -> list[Assignment]:
        """Up to ``limit`` current assignments made by another model version, in user id
        order, after the user id ``after``."""
        return self._page(assignments.c.model_version != model_version, after, limit)

    def _page(self, condition: sa.ColumnElement[bool], after: str | None, limit: int) -> list:
        """Up to ``limit`` current assignments meeting ``condition``, in user id order,
        after the user id ``after`` (a keyset page)."""
        query = sa.select(assignments).where(condition).order_by(assignments.c.user_id)
        if after is not None:
            query = query.where(assignments.c.user_id > after)
        rows = self.run(lambda conn: conn.execute(query.limit(limit)).all(), write=False)
        return [Assignment.from_row(row) for row in rows]

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
                update = (
                    assignments.update()
                    .where(assignments.c.user_id == row.pop("user_id"))
                    .where(assignments.c.assigned_at == read.assigned_at)
                    .where(assignments.c.model_version == read.model_version)
                    .values(**row, seq=next_seq(conn.dialect))
                )
                if conn.execute(update).rowcount:
                    applied.append((read, replace(new, room_id=row["room_id"])))
            if applied:
                written = [new.as_row() for _, new in applied]
                conn.execute(assignment_history.insert(), written)
                before = {str(read.user_id): (read.cluster, read.room_id) for read, _ in applied}
                add_events(conn, change_events(before, written))
            return applied

        return self.run(work, write=True)

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
        rows = self.run(lambda conn: conn.execute(query).all(), write=False)
        return {segment: count for segment, count in rows}

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
            if erased is not None:  # the similar-users indexes forget them (neighbours.py)
                conn.execute(store_state.update().values(erasures=store_state.c.erasures + 1))
                add_events(conn, [erasure_event(user_id, tuple(erased), datetime.now(UTC))])
            return (erased is not None) + gone.rowcount

        return self.run(work, write=True) > 0

    def similar(
        self, user_id: str, k: int, same_city: bool
    ) -> tuple[Assignment, list[tuple[Neighbour, Assignment]]] | None:
        """The user and the ``k`` stored users most like them (``neighbours.py``), with
        their current assignments; ``same_city``: of the user's city (none for a user
        without one). None when the user is not stored."""
        me = sa.select(assignments).where(assignments.c.user_id == user_id)

        def work(conn: sa.Connection) -> tuple[sa.Row, list[Neighbour], list[sa.Row]] | None:
            self._neighbours.refresh(conn)  # first: it ends its own transaction
            row = conn.execute(me).first()
            if row is None:
                return None
            if same_city and row.city_key is None:  # nobody shares a city they have not
                return row, [], []
            city = row.city_key if same_city else None
            found = self._neighbours.similar(row.user_no, row.interest_mask, city, k)
            numbers = [neighbour.user_no for neighbour in found]
            rows = conn.execute(
                sa.select(assignments).where(assignments.c.user_no.in_(numbers))
            ).all()
            return row, found, rows

        result = self.run(work, write=False)
        if result is None:
            return None
        row, found, rows = result
        by_number = {r.user_no: Assignment.from_row(r) for r in rows}
        # A user erased between the index's refresh and this read is left out.
        neighbours = [(n, by_number[n.user_no]) for n in found if n.user_no in by_number]
        return Assignment.from_row(row), neighbours

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
        rows = self.run(lambda conn: conn.execute(query).all(), write=False)
        columns = np.array(rows, dtype=np.int64).reshape(len(rows), 3)
        return columns[:, 0], columns[:, 1], columns[:, 2]

    def count_users(self) -> int:
        query = sa.select(sa.func.count()).select_from(assignments)
        return self.run(lambda conn: conn.execute(query).scalar_one(), write=False)

    def rooms(self, city_key: str | None, after: str | None, limit: int) -> list[sa.Row]:
        """Rooms (id, city, segment, members), by id; of one city's key, or all."""
        return self.run(lambda conn: room_counts(conn, city_key, after, limit), write=False)

    def room(self, room_id: str) -> sa.Row | None:
        """The room (id, city, segment, members), or None."""
        found = self.run(lambda conn: room_counts(conn, None, None, 1, room_id), write=False)
        return found[0] if found else None

    def room_members(self, room_id: str, after: str | None, limit: int) -> list[Assignment]:
        """The room's members in user id order, after the user id ``after``."""
        return self._page(assignments.c.room_id == room_id, after, limit)

    def room_to_join(self, city_key: str, segment: int) -> tuple[str, str | None]:
        """The room a user of this city and segment would join now: its id, and its
        city as written (None when it is not opened yet)."""
        return self.run(
            lambda conn: room_to_join(conn, city_key, segment, self.room_size), write=False
        )

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        self.run(lambda conn: conn.execute(sa.text("SELECT 1")), write=False)

    def add_responses(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert survey answers, skipping those already stored; the number inserted."""
        if not rows:
            return 0
        insert = self.insert(survey_responses).on_conflict_do_nothing(
            index_elements=[survey_responses.c.answer_sha256]
        )

        def work(conn: sa.Connection) -> int:
            before = conn.execute(sa.select(sa.func.count()).select_from(survey_responses))
            count = before.scalar_one()
            conn.execute(insert, list(rows))
            after = conn.execute(sa.select(sa.func.count()).select_from(survey_responses))
            return after.scalar_one() - count

        return self.run(work, write=True)

    def response_features(self) -> tuple[np.ndarray, list[str]]:
        """Every stored survey answer as a 0/1 matrix (in ingestion order), with the
        answers' hashes in the same order."""
        query = sa.select(survey_responses.c.interests, survey_responses.c.answer_sha256)
        rows = self.run(
            lambda conn: conn.execute(query.order_by(survey_responses.c.id)).all(), write=False
        )
        features = np.array(
            [encode_interests(dict.fromkeys(row.interests, True)) for row in rows]
        ).reshape(len(rows), len(INTEREST_KEYS))
        return features, [row.answer_sha256 for row in rows]


def default_database_url(instance_path: str) -> str:
    return f"sqlite:///{Path(instance_path) / SQLITE_FILE}"


def open_store(config: Mapping[str, Any], instance_path: str) -> UserStore:
    """The store of DATABASE_URL (default: SQLite in the instance folder), its schema
    made sure of: an empty database gets every migration."""
    from .migrations import prepare_schema

    url = config.get("DATABASE_URL") or default_database_url(instance_path)
    timeout = float(config["DATABASE_TIMEOUT"])
    engine = create_store_engine(url, timeout)
    try:
        revision = prepare_schema(engine)
    except UNAVAILABLE_ERRORS as exc:
        raise StoreUnavailable(
            f"cannot reach the database {engine.url.render_as_string(hide_password=True)}: "
            f"{str(exc.orig or exc).strip().splitlines()[0]}"
        ) from None
    finally:
        engine.dispose()  # no connection of the start-up survives into forked workers
    store = UserStore(engine, timeout, int(config["ROOM_SIZE"]))
    store.schema_revision = revision
    return store


def init_app(app: Flask) -> None:
    app.extensions["user_store"] = open_store(app.config, app.instance_path)


def get_store() -> UserStore:
    return current_app.extensions["user_store"]
