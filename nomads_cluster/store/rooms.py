"""Chat rooms: each user who gave a city is a member of one room of their city and
segment, and no room holds more than the room size.

A user stays in their room while their city and segment stay the same; otherwise they
join the first room of their city and segment with a free place (in the order the rooms
were opened), or open the next one. Placing is race-free: on SQLite the writers take
turns; on PostgreSQL whoever places takes ROOMS_LOCK until they commit, and counts the
members only then. Users who leave a room (another city or segment, no city, erased)
need no lock: they only free places.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..cities import room_id
from .engine import advisory_lock
from .tables import assignments, rooms
from .writes import ROOMS_LOCK

Row = dict[str, Any]  # Assignment.as_row()


@dataclass
class PlacedRoom:
    id: str
    city: str  # as its first member wrote it
    members: int


def _city_rooms(conn: sa.Connection, key: str, segment: int) -> dict[int, PlacedRoom]:
    """Ordinal -> room, with its members, of a city's rooms of a segment."""
    query = (
        sa.select(rooms.c.ordinal, rooms.c.id, rooms.c.city, sa.func.count(assignments.c.user_id))
        .select_from(rooms.outerjoin(assignments, assignments.c.room_id == rooms.c.id))
        .where(rooms.c.city_key == key, rooms.c.segment == segment)
        .group_by(rooms.c.ordinal, rooms.c.id, rooms.c.city)
    )
    return {o: PlacedRoom(id_, city, n) for o, id_, city, n in conn.execute(query)}


def _ordinal_to_join(city_rooms: dict[int, PlacedRoom], room_size: int) -> int:
    """The first room with a free place, or the next one to open."""
    free = (o for o, room in sorted(city_rooms.items()) if room.members < room_size)
    return next(free, max(city_rooms, default=0) + 1)


class RoomPlan:
    """The rooms' members as this transaction changes them."""

    def __init__(self, conn: sa.Connection, room_size: int):
        self.conn = conn
        self.room_size = room_size
        self._rooms: dict[tuple[str, int], dict[int, PlacedRoom]] = {}
        self._place: dict[str, tuple[str, int, PlacedRoom] | None] = {}  # user -> room

    def _city_rooms(self, key: str, segment: int) -> dict[int, PlacedRoom]:
        if (key, segment) not in self._rooms:
            self._rooms[key, segment] = _city_rooms(self.conn, key, segment)
        return self._rooms[key, segment]

    def know_current(self, user_ids: Sequence[str]) -> None:
        """Read the users' current rooms, locking their rows (PostgreSQL) so that no
        concurrent write moves them before this transaction commits."""
        query = (
            sa.select(assignments.c.user_id, rooms.c.city_key, rooms.c.segment, rooms.c.id)
            .join(rooms, rooms.c.id == assignments.c.room_id)
            .where(assignments.c.user_id.in_(user_ids))
            .with_for_update(of=assignments)
        )
        for user_id, key, segment, id_ in self.conn.execute(query).all():
            room = next(r for r in self._city_rooms(key, segment).values() if r.id == id_)
            self._place[user_id] = (key, segment, room)

    def place(self, row: Row) -> PlacedRoom | None:
        """Set ``row["room_id"]`` to the user's room after this row (None without a
        city), and return that room."""
        now = self._place.get(row["user_id"])
        key, segment = row["city_key"], row["cluster"]
        if now is not None and now[:2] == (key, segment):
            row["room_id"] = now[2].id
            return now[2]
        if now is not None:
            now[2].members -= 1
        room = None
        if key is not None:
            city_rooms = self._city_rooms(key, segment)
            ordinal = _ordinal_to_join(city_rooms, self.room_size)
            if ordinal not in city_rooms:
                room = PlacedRoom(room_id(key, segment, ordinal), row["city"], 0)
                self.conn.execute(
                    rooms.insert().values(
                        id=room.id, city_key=key, city=room.city, segment=segment, ordinal=ordinal
                    )
                )
                city_rooms[ordinal] = room
            room = city_rooms[ordinal]
            room.members += 1
        row["room_id"] = None if room is None else room.id
        self._place[row["user_id"]] = None if room is None else (key, segment, room)
        return room


def place_in_rooms(
    conn: sa.Connection, rows: Sequence[Row], room_size: int
) -> list[PlacedRoom | None]:
    """Give each row its room (``room_id``), in order: of several rows of one user, the
    last decides. Runs in the transaction that then writes the rows; the rooms, in the
    rows' order."""
    advisory_lock(conn, ROOMS_LOCK)
    plan = RoomPlan(conn, room_size)
    plan.know_current(sorted({row["user_id"] for row in rows}))
    return [plan.place(row) for row in rows]


def room_counts(
    conn: sa.Connection,
    key: str | None,
    after: str | None,
    limit: int,
    room_id: str | None = None,
) -> list:
    """Rooms (of a city's key, or all, or the one ``room_id``) with their member
    counts, by id after ``after``."""
    members = sa.func.count(assignments.c.user_id).label("members")
    query = (
        sa.select(rooms.c.id, rooms.c.city, rooms.c.segment, members)
        .select_from(rooms.outerjoin(assignments, assignments.c.room_id == rooms.c.id))
        .group_by(rooms.c.id, rooms.c.city, rooms.c.segment)
        .order_by(rooms.c.id)
        .limit(limit)
    )
    if key is not None:
        query = query.where(rooms.c.city_key == key)
    if after is not None:
        query = query.where(rooms.c.id > after)
    if room_id is not None:
        query = query.where(rooms.c.id == room_id)
    return conn.execute(query).all()


def room_to_join(
    conn: sa.Connection, key: str, segment: int, room_size: int
) -> tuple[str, str | None]:
    """The id of the room a user of this city and segment would join now, and its
    city's name (None for a room not opened yet)."""
    city_rooms = _city_rooms(conn, key, segment)
    ordinal = _ordinal_to_join(city_rooms, room_size)
    if ordinal in city_rooms:
        return city_rooms[ordinal].id, city_rooms[ordinal].city
    return room_id(key, segment, ordinal), None
