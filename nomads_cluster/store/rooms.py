"""Chat rooms: each user who gave a city is a member of one room of their city and
segment, and no room holds more than the room size.

A user stays in their room while their city and segment stay the same; otherwise they
join the first room of their city and segment with a free place (in the order the rooms
were opened), or open the next one. Each room's ``members`` is kept by the database
(triggers on the assignments, migration 0004), so joining reads the group's rooms with
a free place and its last one, not its members.

Placing is race-free: on SQLite the writers take turns; on PostgreSQL whoever places
users in a city's segment locks the users' rows, then holds that group's advisory lock
until they commit (the locks of a transaction's groups taken in one order, so two never
wait on each other), and reads the counts only then. Groups apart are placed in
parallel. Users who leave a room (another city or segment, no city, erased) need no
lock: they only free places; nor do users who keep theirs.

This module places the users of SQLite's writes, and of ``reassign`` on both databases.
A PostgreSQL write places its users inside its one statement, by the same rule and
locks, with migration 0010's function (``writes.py``): the locks are then not held
across the client's round trips.
"""

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..cities import room_id
from .database import Database
from .engine import advisory_lock, sqlite_in_lists
from .records import Assignment, current_page
from .tables import assignments, rooms

Row = dict[str, Any]  # Assignment.as_row()
Group = tuple[str, int]  # a city's key and a segment: the users who share rooms


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


class RoomQueries:
    """The placement's statements, written once per database and run with the driver's
    own parameters: they run in every write with a city, where SQLAlchemy's building
    and compiling of a statement cost more than the database's work."""

    def __init__(self, postgresql: bool):
        self.postgresql = postgresql
        mark = "%s" if postgresql else "?"
        # A room as read: its group, its ordinal, then the fields of a PlacedRoom.
        room = "r.city_key, r.segment, r.ordinal, r.id, r.city, r.members"
        # The users' rows, read once ``lock_users`` has locked them (PostgreSQL).
        where = "a.user_id = ANY(%s)" if postgresql else "a.user_id IN ({})"
        self._current = (
            f"SELECT a.user_id, {room} FROM {assignments.name} a"
            f" LEFT JOIN {rooms.name} r ON r.id = a.room_id WHERE {where}"
        )
        groups = "SELECT * FROM unnest(%s::varchar[], %s::int[])" if postgresql else "{}"
        # Of each group, the rooms with a free place and its last one (by the unique
        # index on city_key, segment, ordinal).
        self._open = (
            f"SELECT {room} FROM {rooms.name} r JOIN (SELECT city_key, segment,"
            f" max(ordinal) AS last FROM {rooms.name} WHERE (city_key, segment) IN ({groups})"
            f" GROUP BY city_key, segment) AS g"
            f" ON g.city_key = r.city_key AND g.segment = r.segment"
            f" WHERE r.members < {mark} OR r.ordinal = g.last"
        )
        # PostgreSQL: the users' rows locked first, in the order of their ids, as every
        # write locks them first (``writes.py``; SQLite's writers take turns), then both
        # read in one round trip, the open rooms told apart by no user.
        self._lock_users = (
            f"SELECT 1 FROM {assignments.name} WHERE user_id = ANY(%s) ORDER BY user_id FOR UPDATE"
        )
        self._current_and_open = (
            f"WITH current AS ({self._current})"
            f" SELECT * FROM current UNION ALL SELECT NULL, * FROM ({self._open}) AS open_rooms"
        )
        names = ("id", "city_key", "city", "segment", "ordinal")
        self.open_room = (
            f"INSERT INTO {rooms.name} ({', '.join(names)}) VALUES ({', '.join([mark] * 5)})"
        )

    def lock_users(self, conn: sa.Connection, user_ids: Sequence[str]) -> None:
        """Lock the stored users' rows among ``user_ids``, in the order of their ids
        (PostgreSQL; SQLite's writers take turns)."""
        if self.postgresql and user_ids:
            conn.exec_driver_sql(self._lock_users, (list(user_ids),))

    def read(
        self, conn: sa.Connection, user_ids: Sequence[str], groups: Sequence[Group], room_size: int
    ) -> tuple[list[tuple], list[tuple]]:
        """Each stored user among ``user_ids`` with their room as read (Nones without
        one), and the rooms as read of ``groups`` with a free place, and their last (on
        PostgreSQL, the users' rows locked first: ``lock_users``)."""
        if self.postgresql:
            keys, segments = [key for key, _ in groups], [segment for _, segment in groups]
            parameters = (list(user_ids), keys, segments, room_size)
            found = conn.exec_driver_sql(self._current_and_open, parameters).all()
            return [r for r in found if r[0] is not None], [r[1:] for r in found if r[0] is None]
        current = sqlite_in_lists(conn, self._current, [(user_id,) for user_id in user_ids])
        open_rooms = sqlite_in_lists(conn, self._open, groups, after=(room_size,))
        return current, open_rooms


QUERIES = {postgresql: RoomQueries(postgresql) for postgresql in (False, True)}


def room_queries(conn: sa.Connection) -> RoomQueries:
    return QUERIES[conn.dialect.name == "postgresql"]


def _by_group(found: Iterable[tuple]) -> dict[Group, dict[int, PlacedRoom]]:
    """Rooms as read, by group and ordinal."""
    rooms_by_group: dict[Group, dict[int, PlacedRoom]] = {}
    for key, segment, ordinal, *room in found:
        rooms_by_group.setdefault((key, segment), {})[ordinal] = PlacedRoom(*room)
    return rooms_by_group


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
        self._place: dict[str, tuple[Group, PlacedRoom] | None] = {}  # user -> room

    def _known(self, group: Group, ordinal: int, room: PlacedRoom) -> PlacedRoom:
        """The plan's room of that ordinal: the one read first, with this
        transaction's changes to its members."""
        return self._rooms.setdefault(group, {}).setdefault(ordinal, room)

    def read(self, user_ids: Sequence[str], groups: Sequence[Group]) -> None:
        """Lock the users' rows in the order of their ids, as every write does first
        (``writes.py``), then take the groups' locks (PostgreSQL, in the order given),
        then read the users' current rooms and the groups' rooms with a free place: no
        concurrent write moves these users or fills these rooms before this transaction
        commits, and none waits for this one while holding what this one needs next.
        (The reads in a statement of their own: one that waited for the locks would read
        as of before.)"""
        queries = room_queries(self.conn)
        queries.lock_users(self.conn, user_ids)
        advisory_lock(self.conn, *(group_lock(group) for group in groups))
        current, open_rooms = queries.read(self.conn, user_ids, groups, self.room_size)
        for user_id, key, segment, ordinal, *room in current:
            if key is not None:  # else stored without a room
                group = (key, segment)
                self._place[user_id] = (group, self._known(group, ordinal, PlacedRoom(*room)))
        for group, found in _by_group(open_rooms).items():
            for ordinal, room in found.items():
                self._known(group, ordinal, room)

    def place(self, row: Row) -> PlacedRoom | None:
        """Set ``row["room_id"]`` to the user's room after this row (None without a
        city), and return that room (its group read first, ``read``)."""
        now = self._place.get(row["user_id"])
        key, segment = row["city_key"], row["cluster"]
        if now is not None and now[0] == (key, segment):
            row["room_id"] = now[1].id
            return now[1]
        if now is not None:
            now[1].members -= 1
        room = None
        if key is not None:
            group_rooms = self._rooms.setdefault((key, segment), {})
            ordinal = _ordinal_to_join(group_rooms, self.room_size)
            if ordinal not in group_rooms:
                room = PlacedRoom(room_id(key, segment, ordinal), row["city"], 0)
                self.conn.exec_driver_sql(
                    room_queries(self.conn).open_room, (room.id, key, room.city, segment, ordinal)
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
    plan = RoomPlan(conn, room_size)
    plan.read(sorted({row["user_id"] for row in rows}), sorted(groups, key=group_lock))
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
            _, found = room_queries(conn).read(conn, [], [group], self.room_size)
            group_rooms = _by_group(found).get(group, {})
            ordinal = _ordinal_to_join(group_rooms, self.room_size)
            if ordinal in group_rooms:
                return group_rooms[ordinal].id, group_rooms[ordinal].city
            return room_id(key, segment, ordinal), None

        return self.database.run(work, write=False)

    @staticmethod
    def _counts() -> sa.Select:
        columns = (rooms.c.id, rooms.c.city, rooms.c.segment, rooms.c.members)
        return sa.select(*columns).order_by(rooms.c.id)
