"""The change feed: an event for every change of a user's segment or room, written in
the transaction of the change that causes it (a transactional outbox): an acknowledged
change always has its event, a failed write has none.

- ``user.placed``: a user's first assignment, or their first room (a first city);
- ``user.moved``: their segment or room changed (a new post, ``reassign``, ...);
- ``user.erased``: the user was erased.

A re-post that changes neither makes no event. Events carry no interests.

Ids come from one counter in commit order: on SQLite the writers take turns; on
PostgreSQL, where a sequence's numbers become visible out of commit order, every
writer holds CHANGES_LOCK shared until it commits (``writes.py``), and a reader takes
it exclusive before it reads, which waits for the writers in flight: a reader never
sees an id while a smaller one is still to come.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..errors import ServiceError
from .engine import CHANGES_LOCK, advisory_lock, as_utc
from .tables import store_state, user_events, webhook_deliveries

PLACED, MOVED, ERASED = "user.placed", "user.moved", "user.erased"
# What a user is told, as events compare it: (segment, room id); None: not stored.
Place = tuple[int, str | None]


class CursorTooOld(ServiceError, LookupError):
    """The events after this cursor were pruned: the reader must rebuild its state."""

    def __init__(self, after: int, pruned_through: int):
        super().__init__(
            f"the events up to {pruned_through} were pruned (kept for a limited time): "
            f"events after {after} are no longer all here"
        )
        self.pruned_through = pruned_through


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    user_id: str
    segment: int | None
    room: str | None
    previous_segment: int | None
    previous_room: str | None
    model_version: str | None
    source: str
    occurred_at: datetime

    def as_json(self) -> dict[str, Any]:
        """The event as the feed and the webhook send it."""
        return {
            "id": self.id,
            "type": self.type,
            "user_id": self.user_id,
            "segment": self.segment,
            "room": self.room,
            "previous_segment": self.previous_segment,
            "previous_room": self.previous_room,
            "model_version": self.model_version,
            "source": self.source,
            "occurred_at": self.occurred_at.isoformat(),
        }

    @classmethod
    def from_row(cls, row: sa.Row) -> "Event":
        return cls(**{**row._asdict(), "occurred_at": as_utc(row.occurred_at)})


def change_events(
    before: Mapping[str, Place | None], rows: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The events of writing ``rows`` (assignment rows, in order) over the users'
    places ``before``: one per row that changes its user's segment or room."""
    places = dict(before)
    events = []
    for row in rows:
        user_id, new = row["user_id"], (row["cluster"], row["room_id"])
        old = places.get(user_id)
        places[user_id] = new
        if old == new:
            continue
        first = old is None or (old[1] is None and new[1] is not None)
        events.append(
            {
                "type": PLACED if first else MOVED,
                "user_id": user_id,
                "segment": new[0],
                "room": new[1],
                "previous_segment": None if old is None else old[0],
                "previous_room": None if old is None else old[1],
                "model_version": row["model_version"],
                "source": row["source"],
                "occurred_at": row["assigned_at"],
            }
        )
    return events


def erasure_event(user_id: str, before: Place, occurred_at: datetime) -> dict[str, Any]:
    return {
        "type": ERASED,
        "user_id": user_id,
        "segment": None,
        "room": None,
        "previous_segment": before[0],
        "previous_room": before[1],
        "model_version": None,
        "source": "erasure",
        "occurred_at": occurred_at,
    }


def add_events(conn: sa.Connection, events: Iterable[dict[str, Any]]) -> None:
    """Insert events in the writer's transaction (which holds CHANGES_LOCK shared on
    PostgreSQL), in order."""
    events = list(events)
    if events:
        conn.execute(user_events.insert(), events)


def read_events(conn: sa.Connection, after: int, limit: int) -> list[Event]:
    """Up to ``limit`` events after the id ``after``, in id order, every one committed
    and none still to come below the last; CursorTooOld if some were pruned."""
    with conn.begin():
        advisory_lock(conn, CHANGES_LOCK)  # exclusive: the writers in flight commit first
        pruned_through = conn.execute(
            sa.select(store_state.c.events_pruned_through).where(store_state.c.id == 1)
        ).scalar_one()
        if after < pruned_through:
            raise CursorTooOld(after, pruned_through)
        rows = conn.execute(
            sa.select(user_events)
            .where(user_events.c.id > after)
            .order_by(user_events.c.id)
            .limit(limit)
        ).all()
    return [Event.from_row(row) for row in rows]


def oldest_kept(conn: sa.Connection) -> int:
    """The cursor from which every kept event is read: the last pruned id."""
    query = sa.select(store_state.c.events_pruned_through).where(store_state.c.id == 1)
    return conn.execute(query).scalar_one()


def prune_events(conn: sa.Connection, keep: timedelta) -> int:
    """Delete the events older than ``keep``; how many. A cursor at or after the last
    deleted id stays valid."""
    cutoff = datetime.now(UTC) - keep
    old = sa.select(sa.func.max(user_events.c.id)).where(user_events.c.occurred_at < cutoff)
    through = conn.execute(old).scalar()
    if through is None:
        return 0
    deleted = conn.execute(user_events.delete().where(user_events.c.id <= through)).rowcount
    conn.execute(
        store_state.update()
        .where(store_state.c.id == 1)
        .values(
            events_pruned_through=sa.func.max(store_state.c.events_pruned_through, through)
            if conn.dialect.name == "sqlite"
            else sa.func.greatest(store_state.c.events_pruned_through, through)
        )
    )
    return deleted


def last_event_id(conn: sa.Connection) -> int:
    """The id of the last event written (0: none yet, or all pruned before any)."""
    query = sa.select(sa.func.max(user_events.c.id))
    return conn.execute(query).scalar() or oldest_kept(conn)


def delivery_figures(conn: sa.Connection) -> list[tuple[str, int, int, float | None]]:
    """Per receiver: events delivered, failed tries, and the age in seconds of the
    oldest event not yet delivered (None: none waiting)."""
    oldest = (
        sa.select(sa.func.min(user_events.c.occurred_at))
        .where(user_events.c.id > webhook_deliveries.c.delivered_through)
        .scalar_subquery()
    )
    rows = conn.execute(
        sa.select(
            webhook_deliveries.c.url,
            webhook_deliveries.c.delivered_events,
            webhook_deliveries.c.failed_attempts,
            oldest,
        )
    ).all()
    now = datetime.now(UTC)
    return [
        (url, delivered, failed, None if at is None else (now - as_utc(at)).total_seconds())
        for url, delivered, failed, at in rows
    ]
