"""Writing assignments in as few statements as the database allows.

Every stored answer passes here (through the group committer), so a write's cost is
part of each request's. SQLAlchemy's compiled statements spend more CPU per group than
the database does, and psycopg's pipelined ``executemany`` makes several round trips;
here the statements are written once per database and the values handed to the driver
as they are:

- SQLite: two ``executemany`` of one statement each, which sqlite3 loops over in C;
- PostgreSQL: one statement for the whole group, its rows as one JSON parameter
  (``json_to_recordset``), the history's insert in a data-modifying CTE, and the last
  row of each user made current (``DISTINCT ON``); run outside a transaction, since a
  single statement is atomic alone. With a city, the same statement first places the
  rows in rooms (migration 0010's ``place_in_rooms``) and returns their rooms; a bulk
  command's chunk is placed in Python first, in the write's transaction.

Users with a city are placed in rooms (``rooms.py``'s rule): on SQLite in Python, in
the write's transaction.

Each write also adds the events of the changes it makes (``events.py``): in the same
statement on PostgreSQL, in the same transaction on SQLite. Each write numbers its rows
in the order of the changes (``seq``, for the similar-users index, ``neighbours.py``).
On PostgreSQL, where transactions commit in any order, a writer holds CHANGES_LOCK
shared until it commits, and the index and the change feed take it exclusive for a
moment to learn up to which number every change is committed.

The tables and every read stay SQLAlchemy's (``tables.py``, ``users.py``).
"""

import json
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from .engine import CHANGES_LOCK, advisory_lock, sqlite_in_lists
from .events import MOVED, PLACED, Place, change_events
from .rooms import Group, PlacedRoom, group_lock, place_in_rooms
from .tables import (
    SEQ_SEQUENCE,
    USER_NO_SEQUENCE,
    assignment_history,
    assignments,
    rooms,
    user_events,
)

NUMBERED = ("user_no", "seq")  # given by the database, not by the row
# What a row gives: the current assignment's columns; the history takes some of them.
COLUMNS = tuple(c.name for c in assignments.c if c.name not in NUMBERED)
HISTORY_COLUMNS = tuple(c.name for c in assignment_history.c if c.name != "id")
EVENT_COLUMNS = ", ".join(c.name for c in user_events.c if c.name != "id")

Row = dict[str, Any]  # Assignment.as_row()
# Rows of a PostgreSQL write placed in rooms inside its statement, at most: every group
# of the request path (commits.MAX_GROUP_ROWS), not a bulk command's chunk.
PLACED_IN_ONE_STATEMENT_ROWS = 5000
# Writes the rows, in a room each where they give a city; their rooms, in order.
Write = Callable[[sa.Connection, Sequence[Row], int], list[PlacedRoom | None]]


@dataclass(frozen=True)
class AssignmentWriter:
    """Places the rows that give a city in rooms, adds the rows to the history and makes
    each user's last one their current one."""

    write: Write
    # Whether ``write`` of these rows is one statement, atomic alone: it may then run
    # outside a transaction, which saves the BEGIN and COMMIT round trips (PostgreSQL
    # still flushes its WAL before answering).
    one_statement: Callable[[Sequence[Row]], bool]


def next_seq(dialect: Dialect) -> sa.ColumnElement[int]:
    """The number of the next change (SQLite's writers take turns: the largest + 1)."""
    if dialect.name == "postgresql":
        return SEQ_SEQUENCE.next_value()
    return sa.select(sa.func.coalesce(sa.func.max(assignments.c.seq), 0) + 1).scalar_subquery()


def take_changes_lock(conn: sa.Connection) -> None:
    """Hold CHANGES_LOCK shared until the transaction ends, as every writer does."""
    advisory_lock(conn, CHANGES_LOCK, shared=True)


# The columns whose change is a change of a user's interest set (of all users' sets, or
# of a city's): only then does a write give the user a new change number.
INTEREST_SET = ("interest_mask", "city_key")


def _updates(excluded: str, same: str) -> str:
    """The SET of an upsert: every column, and a new change number only for a user whose
    interest set changes (the similar users' sets follow those numbers: a re-scoring of
    every user, as ``reassign``, leaves them nothing to catch up). ``same``: the
    database's null-safe equality."""
    names = [name for name in COLUMNS if name != "user_id"]
    unchanged = " AND ".join(
        f"{assignments.name}.{name} {same} {excluded}.{name}" for name in INTEREST_SET
    )
    return ", ".join(f"{name} = {excluded}.{name}" for name in names) + (
        f", seq = CASE WHEN {unchanged} THEN {assignments.name}.seq ELSE {excluded}.seq END"
    )


def _sqlite_write(dialect: Dialect) -> Write:
    def marks(names: Sequence[str]) -> str:
        return ", ".join("?" * len(names))

    def following(name: str) -> str:
        return f"(SELECT coalesce(max({name}), 0) + 1 FROM {assignments.name})"

    add_history = (
        f"INSERT INTO {assignment_history.name} ({', '.join(HISTORY_COLUMNS)})"
        f" VALUES ({marks(HISTORY_COLUMNS)})"
    )
    make_current = (
        f"INSERT INTO {assignments.name} ({', '.join(COLUMNS)}, user_no, seq)"
        f" VALUES ({marks(COLUMNS)}, {following('user_no')}, {following('seq')})"
        f" ON CONFLICT (user_id) DO UPDATE SET {_updates('excluded', 'IS')}"
    )
    # Per column, what SQLAlchemy does to a value before sqlite3 sees it (None: nothing;
    # dates become its text), so that SQLAlchemy reads the rows back as its own.
    encoders = {
        column.name: json.dumps
        if isinstance(column.type, sa.JSON)
        else column.type.dialect_impl(dialect).bind_processor(dialect)
        for column in assignments.c
    }

    def encode(row: Row) -> tuple:
        """The row's values in COLUMNS order, as sqlite3 takes them."""
        return tuple(
            row[name] if encoders[name] is None else encoders[name](row[name]) for name in COLUMNS
        )

    history_values = operator.itemgetter(*(COLUMNS.index(name) for name in HISTORY_COLUMNS))

    event_names = [c.name for c in user_events.c if c.name != "id"]
    add_events = (
        f"INSERT INTO {user_events.name} ({', '.join(event_names)}) VALUES ({marks(event_names)})"
    )
    encode_time = encoders["assigned_at"]

    def current_places(conn: sa.Connection, user_ids: Sequence[str]) -> dict[str, Place]:
        """Each stored user's (segment, room) among ``user_ids``."""
        query = f"SELECT user_id, cluster, room_id FROM {assignments.name} WHERE user_id IN ({{}})"
        found = sqlite_in_lists(conn, query, [(user_id,) for user_id in user_ids])
        return {user_id: (segment, room) for user_id, segment, room in found}

    def write(conn: sa.Connection, rows: Sequence[Row], room_size: int) -> list[PlacedRoom | None]:
        if any(row["city_key"] for row in rows):
            placed = place_in_rooms(conn, rows, room_size)
        else:  # a user who leaves a room needs no placing
            placed = [None] * len(rows)
        encoded = [encode(row) for row in rows]
        last_per_user = {row["user_id"]: values for row, values in zip(rows, encoded, strict=True)}
        before = current_places(conn, list(last_per_user))
        conn.exec_driver_sql(add_history, [history_values(values) for values in encoded])
        conn.exec_driver_sql(make_current, list(last_per_user.values()))
        events = change_events(before, rows)
        if events:
            conn.exec_driver_sql(
                add_events,
                [
                    tuple(
                        encode_time(event[name]) if name == "occurred_at" else event[name]
                        for name in event_names
                    )
                    for event in events
                ],
            )
        return placed

    return write


def _postgresql_write(dialect: Dialect) -> Write:
    names, history_names = ", ".join(COLUMNS), ", ".join(HISTORY_COLUMNS)
    types = ", ".join(
        f"{column.name} {column.type.compile(dialect)}"
        for column in assignments.c
        if column.name in COLUMNS
    )
    rows = (
        f"(SELECT pg_advisory_xact_lock_shared({CHANGES_LOCK})) AS changes_lock,"
        f" ROWS FROM (json_to_recordset(%(rows)s::json) AS ({types}))"
        f" WITH ORDINALITY AS given({names}, position)"
    )
    # Numbered in the rows' order, as on SQLite: a new user's number says who was stored
    # first (the similar users' ties). A number not used is simply skipped.
    numbered = (
        f" numbered AS (SELECT *, nextval('{USER_NO_SEQUENCE.name}') AS user_no FROM given"
        f" ORDER BY position),"
        f" history AS (INSERT INTO {assignment_history.name} ({history_names})"
        f" SELECT {history_names} FROM given ORDER BY position),"
    )
    # Each row's place before it: the user's previous row in the group, or their stored
    # place (``present``); a row that changes it is an event (store/events.py's rules).
    events = (
        f" placed AS (SELECT g.position, g.user_id, g.cluster, g.room_id, g.model_version,"
        f" g.source, g.assigned_at,"
        f" lag(g.position) OVER w IS NOT NULL OR p.user_id IS NOT NULL AS existed,"
        f" CASE WHEN lag(g.position) OVER w IS NULL THEN p.cluster"
        f" ELSE lag(g.cluster) OVER w END AS previous_segment,"
        f" CASE WHEN lag(g.position) OVER w IS NULL THEN p.room_id"
        f" ELSE lag(g.room_id) OVER w END AS previous_room"
        f" FROM given g LEFT JOIN present p ON p.user_id = g.user_id"
        f" WINDOW w AS (PARTITION BY g.user_id ORDER BY g.position)),"
        f" events AS (INSERT INTO {user_events.name} ({EVENT_COLUMNS})"
        f" SELECT CASE WHEN NOT existed OR (previous_room IS NULL AND room_id IS NOT NULL)"
        f" THEN '{PLACED}' ELSE '{MOVED}' END, user_id, cluster, room_id,"
        f" CASE WHEN existed THEN previous_segment END, CASE WHEN existed THEN previous_room END,"
        f" model_version, source, assigned_at FROM placed"
        f" WHERE NOT existed OR previous_segment IS DISTINCT FROM cluster"
        f" OR previous_room IS DISTINCT FROM room_id ORDER BY position)"
    )
    make_current = (
        f" INSERT INTO {assignments.name} ({names}, user_no, seq)"
        f" SELECT DISTINCT ON (user_id) {names}, user_no, nextval('{SEQ_SEQUENCE.name}')"
        f" FROM numbered {{where}} ORDER BY user_id, position DESC"
        f" ON CONFLICT (user_id) DO UPDATE SET {_updates('EXCLUDED', 'IS NOT DISTINCT FROM')}"
    )
    without_rooms = (
        f"WITH given AS (SELECT given.* FROM {rows}),{numbered}"
        # Before any row is written, what the write will change is locked in one order
        # that every writer follows: the users' current rows, by user id, then the rooms
        # whose counts change (the triggers of migrations 0004 and 0008), by room id.
        # Two writes that touch the same users or rooms then wait for each other instead
        # of deadlocking (``place_in_rooms``, in Python and in migration 0010, locks the
        # same rows in the same order). (Evaluated first, both: uncorrelated subqueries
        # of the WHERE below, users then rooms. The users' places must be read before
        # the INSERT changes them: the events compare with them, and a row this
        # statement has changed is no longer there for it to lock.)
        # (Each user looked up by its key, in that order: a plan that holds at any size
        # of the table, analyzed or not.)
        " present AS (SELECT a.user_id, a.cluster, a.room_id FROM (SELECT DISTINCT user_id"
        " FROM given ORDER BY user_id) AS u"
        " CROSS JOIN LATERAL (SELECT user_id, cluster, room_id"
        f" FROM {assignments.name} a WHERE a.user_id = u.user_id FOR UPDATE) AS a),{events},"
        f" counted_rooms AS (SELECT id FROM {rooms.name} WHERE id = ANY(ARRAY("
        f"SELECT room_id FROM present UNION SELECT room_id FROM given)) ORDER BY id FOR UPDATE)"
        + make_current.format(
            where="WHERE (SELECT count(*) FROM present) >= 0"
            " AND (SELECT count(*) FROM counted_rooms) >= 0"
        )
    )
    # With a city: the rooms placed by migration 0010's function, which locks the users'
    # rows, takes the locks of the groups it places into, then locks the rooms as above,
    # before anything else of the statement runs (the SELECT below reads it first). It
    # gives the stored users' places, as read under those locks, and each row's room,
    # returned in order.
    given_in_rooms = ", ".join(
        "placement.room_id" if name == "room_id" else f"given.{name}" for name in COLUMNS
    )
    in_rooms = (
        "WITH placement AS (SELECT * FROM"
        " place_in_rooms(%(placement)s::json, %(room_size)s::integer)),"
        f" given AS (SELECT {given_in_rooms}, given.position FROM {rows}"
        " JOIN placement ON placement.position = given.position),"
        f"{numbered}"
        " present AS (SELECT user_id, cluster, room_id FROM placement"
        f" WHERE position IS NULL),{events},"
        f" made_current AS ({make_current.format(where='')})"
        " SELECT room_id, room_city, room_members FROM placement"
        " WHERE position IS NOT NULL ORDER BY position"
    )

    def write(conn: sa.Connection, rows: Sequence[Row], room_size: int) -> list[PlacedRoom | None]:
        groups = {(row["city_key"], row["cluster"]) for row in rows if row["city_key"]}
        if not groups or placed_before_the_statement(rows):
            placed = place_in_rooms(conn, rows, room_size) if groups else [None] * len(rows)
            given = json.dumps(rows, default=datetime.isoformat)  # with their rooms
            conn.exec_driver_sql(without_rooms, {"rows": given})
            return placed
        parameters = {
            "rows": json.dumps(rows, default=datetime.isoformat),
            "placement": json.dumps(_placement(rows, groups)),
            "room_size": room_size,
        }
        placed = conn.exec_driver_sql(in_rooms, parameters).all()
        return [None if room is None else PlacedRoom(room, *rest) for room, *rest in placed]

    return write


def _placement(rows: Sequence[Row], groups: set[Group]) -> dict[str, list]:
    """The rows as ``place_in_rooms`` (migration 0010) takes them: their users, each
    once, and groups, in the order of their locks; per row, the number of its user and
    of its group (None without a city) among them, from 1, and its city."""
    user_numbers = {
        user_id: n
        for n, user_id in enumerate(dict.fromkeys(row["user_id"] for row in rows), start=1)
    }
    locks = sorted((group_lock(group), group) for group in groups)
    ordered = [group for _, group in locks]
    group_numbers = {group: n for n, group in enumerate(ordered, start=1)}
    return {
        "user_ids": list(user_numbers),
        "row_user": [user_numbers[row["user_id"]] for row in rows],
        "row_group": [
            group_numbers[(row["city_key"], row["cluster"])] if row["city_key"] else None
            for row in rows
        ],
        "row_city": [row["city"] for row in rows],
        "group_keys": [key for key, _ in ordered],
        "group_segments": [segment for _, segment in ordered],
        "lock_keys": [key for key, _ in locks],
    }


def placed_before_the_statement(rows: Sequence[Row]) -> bool:
    """Whether a PostgreSQL write of these rows places them in rooms in Python first, in
    its transaction, then writes them with a statement of their own: a bulk command's
    chunk with a city (one writer, for which the function's placement of tens of
    thousands of rows costs more). Otherwise the write is one statement, which places
    any rows with a city itself (a group of the request path: the groups' locks are then
    held for the shortest time)."""
    return len(rows) > PLACED_IN_ONE_STATEMENT_ROWS and any(row["city_key"] for row in rows)


def assignment_writer(dialect: Dialect) -> AssignmentWriter:
    """The way to write assignments on this database."""
    if dialect.name == "postgresql":
        return AssignmentWriter(
            _postgresql_write(dialect),
            one_statement=lambda rows: not placed_before_the_statement(rows),
        )
    return AssignmentWriter(_sqlite_write(dialect), one_statement=lambda rows: False)
