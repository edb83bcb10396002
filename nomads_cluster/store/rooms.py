"""Chat rooms: each user who gave a city is a member of one room of their city and
segment, and no room holds more than the room size.

A user stays in their room while their city and segment stay the same; otherwise they
join the first room of their city and segment with a free place (in the order the rooms
were opened), or open the next one. Each room's ``members`` is kept by the database
(triggers on the assignments, migration 0004), so joining reads the group's rooms with
a free place and its last one, not its members.

Placing is race-free: on SQLite the writers take turns; on PostgreSQL whoever places
users in a city's segment holds that group's advisory lock until they commit (the locks
of a transaction's groups taken in one order, so two never wait on each other), and
reads the counts only then. Groups apart are placed in parallel. Users who leave a room
(another city or segment, no city, erased) need no lock: they only free places.
"""

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..cities import room_id
from .database import Database
from .engine import advisory_lock
from .records import Assignment, current_page
from .tables import assignments, rooms

Row = dict[str, Any]  # Assignment.as_row()
Group = tuple[str, int]  # a city's key and a segment: the users who share rooms
# A room as read: its group, its ordinal, then the fields of a PlacedRoom.
ROOM_COLUMNS = (
    rooms.c.city_key,
    rooms.c.segment,
    rooms.c.ordinal,
    rooms.c.id,
    rooms.c.city,
    rooms.c.members,
)


@dataclass
class PlacedRoom:
    id: str
    city: str  # as its first member wrote it
    members: int


def group_lock(group: Group) -> int:
    """The PostgreSQL advisory lock key of a group: 64 bits of its digest (two groups
    that share one only take turns)."""
    digest = hashlib.blake2b(f"rooms/{group[0]}/{group[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _open_rooms(
    conn: sa.Connection, groups: Iterable[Group], room_size: int
) -> dict[Group, dict[int, PlacedRoom]]:
    """Of each group, the rooms with a free place and the last one opened, by ordinal."""
    in_groups = sa.tuple_(rooms.c.city_key, rooms.c.segment).in_(list(groups))
    last = (
        sa.select(rooms.c.city_key, rooms.c.segment, sa.func.max(rooms.c.ordinal).label("last"))
        .where(in_groups)
        .group_by(rooms.c.city_key, rooms.c.segment)
        .subquery()
    )
    query = (
        sa.select(*ROOM_COLUMNS)
        .join(last, (last.c.city_key == rooms.c.city_key) & (last.c.segment == rooms.c.segment))
        .where(sa.or_(rooms.c.members < room_size, rooms.c.ordinal == last.c.last))
    )
    found: dict[Group, dict[int, PlacedRoom]] = {}
    for key, segment, ordinal, *room in conn.execute(query):
        found.setdefault((key, segment), {})[ordinal] = PlacedRoom(*room)
    return found


def _ordinal_to_join(group_rooms: dict[int, PlacedRoom], room_size: int) -> int:
    """The first room with a free place, or the next one to open (``group_rooms`` holds
    every room of the group with a free place, and its last)."""
    free = (o for o, room in sorted(group_rooms.items()) if room.members < room_size)
    return next(free, max(group_rooms, default=0) + 1)


class RoomPlan:
    """The rooms' members as this transaction changes them."""

    def __init__(self, conn: sa.Connection, room_size: int):
        self.conn = conn
        self.room_size = room_size
        self._rooms: dict[Group, dict[int, PlacedRoom]] = {}  # the rooms read, by group
        self._loaded: set[Group] = set()  # groups whose open rooms are all read
        self._place: dict[str, tuple[Group, PlacedRoom] | None] = {}  # user -> room

    def _known(self, group: Group, ordinal: int, room: PlacedRoom) -> PlacedRoom:
        """The plan's room of that ordinal: the one read first, with this
        transaction's changes to its members."""
        return self._rooms.setdefault(group, {}).setdefault(ordinal, room)

    def load(self, groups: Iterable[Group]) -> None:
        """Read the open rooms of the groups not read yet (one query)."""
        wanted = set(groups) - self._loaded
        if not wanted:
            return
        for group, found in _open_rooms(self.conn, sorted(wanted), self.room_size).items():
            for ordinal, room in found.items():
                self._known(group, ordinal, room)
        self._loaded |= wanted

    def know_current(self, user_ids: Sequence[str]) -> None:
        """Read the users' current rooms, locking their rows (PostgreSQL), in the order
        of their ids, as every write does first (``writes.py``): no concurrent write
        moves them before this transaction commits, and none waits for this one while
        holding what this one needs next."""
        query = (
            sa.select(assignments.c.user_id, *ROOM_COLUMNS)
            .outerjoin(rooms, rooms.c.id == assignments.c.room_id)
            .where(assignments.c.user_id.in_(user_ids))
            .order_by(assignments.c.user_id)
            .with_for_update(of=assignments)
        )
        for user_id, key, segment, ordinal, *room in self.conn.execute(query):
            if key is None:  # stored without a room
                continue
            group = (key, segment)
            self._place[user_id] = (group, self._known(group, ordinal, PlacedRoom(*room)))

    def groups_to_place(self, rows: Sequence[Row]) -> set[Group]:
        """The groups some row joins (not the one its user is in already)."""
        wanted = set()
        for row in rows:
            if row["city_key"] is None:
                continue
            group = (row["city_key"], row["cluster"])
            now = self._place.get(row["user_id"])
            if now is None or now[0] != group:
                wanted.add(group)
        return wanted

    def place(self, row: Row) -> PlacedRoom | None:
        """Set ``row["room_id"]`` to the user's room after this row (None without a
        city), and return that room."""
        now = self._place.get(row["user_id"])
        key, segment = row["city_key"], row["cluster"]
        if now is not None and now[0] == (key, segment):
            row["room_id"] = now[1].id
            return now[1]
        if now is not None:
            now[1].members -= 1
        room = None
        if key is not None:
            group = (key, segment)
            self.load([group])
            group_rooms = self._rooms.setdefault(group, {})
            ordinal = _ordinal_to_join(group_rooms, self.room_size)
            if ordinal not in group_rooms:
                room = PlacedRoom(room_id(key, segment, ordinal), row["city"], 0)
                self.conn.execute(
                    rooms.insert().values(
                        id=room.id, city_key=key, city=room.city, segment=segment, ordinal=ordinal
                    )
                )
                group_rooms[ordinal] = room
            room = group_rooms[ordinal]
            room.members += 1
        row["room_id"] = None if room is None else room.id
        self._place[row["user_id"]] = None if room is None else ((key, segment), room)
        return room


def place_in_rooms(
    conn: sa.Connection, rows: Sequence[Row], room_size: int
) -> list[PlacedRoom | None]:
    """Give each row its room (``room_id``), in order: of several rows of one user, the
    last decides. Runs in the transaction that then writes the rows; the rooms, in the
    rows' order."""
    groups = {(row["city_key"], row["cluster"]) for row in rows if row["city_key"] is not None}
    advisory_lock(conn, *sorted(group_lock(group) for group in groups))
    plan = RoomPlan(conn, room_size)
    plan.know_current(sorted({row["user_id"] for row in rows}))
    plan.load(plan.groups_to_place(rows))
    return [plan.place(row) for row in rows]


class Rooms:
    """The rooms as the API shows them: their member counts, their members, and the
    room a user would join."""

    def __init__(self, database: Database, room_size: int):
        self.database = database
        self.room_size = room_size

    def page(self, key: str | None, after: str | None, limit: int) -> list[sa.Row]:
        """Rooms (id, city, segment, members) by id after ``after``; of one city's key,
        or all."""
        query = self._counts().limit(limit)
        if key is not None:
            query = query.where(rooms.c.city_key == key)
        if after is not None:
            query = query.where(rooms.c.id > after)
        return self.database.run(lambda conn: conn.execute(query).all(), write=False)

    def get(self, room_id: str) -> sa.Row | None:
        """The room (id, city, segment, members), or None."""
        query = self._counts().where(rooms.c.id == room_id)
        return self.database.run(lambda conn: conn.execute(query).first(), write=False)

    def members(self, room_id: str, after: str | None, limit: int) -> list[Assignment]:
        """The room's members in user id order, after the user id ``after``."""
        return current_page(self.database, assignments.c.room_id == room_id, after, limit)

    def to_join(self, key: str, segment: int) -> tuple[str, str | None]:
        """The room a user of this city's key and segment would join now: its id, and
        its city as written (None when it is not opened yet)."""

        def work(conn: sa.Connection) -> tuple[str, str | None]:
            group = (key, segment)
            group_rooms = _open_rooms(conn, [group], self.room_size).get(group, {})
            ordinal = _ordinal_to_join(group_rooms, self.room_size)
            if ordinal in group_rooms:
                return group_rooms[ordinal].id, group_rooms[ordinal].city
            return room_id(key, segment, ordinal), None

        return self.database.run(work, write=False)

    @staticmethod
    def _counts() -> sa.Select:
        columns = (rooms.c.id, rooms.c.city, rooms.c.segment, rooms.c.members)
        return sa.select(*columns).order_by(rooms.c.id)
