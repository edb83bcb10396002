"""Writing assignments in as few statements as the database allows.

Every stored answer passes here (through the group committer), so a write's cost is
part of each request's. Through SQLAlchemy's compiled statements a group of 16
assignments cost 580 µs of CPU on SQLite and 1.9 ms on PostgreSQL (psycopg's pipelined
``executemany``, five round trips); here the statements are written once per database
and the values handed to the driver as they are (``docs/performance.md``):

- SQLite: two ``executemany`` of one statement each, which sqlite3 loops over in C;
- PostgreSQL: one statement for the whole group, its rows as one JSON parameter
  (``json_to_recordset``), the history's insert in a data-modifying CTE, and the last
  row of each user made current (``DISTINCT ON``); run outside a transaction, since a
  single statement is atomic alone.

The tables and every read stay SQLAlchemy's (``tables.py``, ``users.py``).
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from .tables import assignment_history, assignments

# One assignment's columns (the history's are the same, and its id).
COLUMNS = tuple(column.name for column in assignments.c)

Row = dict[str, Any]  # Assignment.as_row()
Write = Callable[[sa.Connection, Sequence[Row]], None]


@dataclass(frozen=True)
class AssignmentWriter:
    """Adds rows to the history and makes each user's last one their current one."""

    write: Write
    # One statement, atomic alone: it may run outside a transaction, which saves the
    # BEGIN and COMMIT round trips (PostgreSQL still flushes its WAL before answering).
    one_statement: bool


def _updates(excluded: str) -> str:
    return ", ".join(f"{name} = {excluded}.{name}" for name in COLUMNS if name != "user_id")


def _sqlite_write(dialect: Dialect) -> Write:
    names, marks = ", ".join(COLUMNS), ", ".join("?" * len(COLUMNS))
    add_history = f"INSERT INTO {assignment_history.name} ({names}) VALUES ({marks})"
    make_current = (
        f"INSERT INTO {assignments.name} ({names}) VALUES ({marks}) "
        f"ON CONFLICT (user_id) DO UPDATE SET {_updates('excluded')}"
    )
    # Per column, what SQLAlchemy does to a value before sqlite3 sees it (None: nothing;
    # dates become its text), so that SQLAlchemy reads the rows back as its own.
    encoders = [
        json.dumps
        if isinstance(column.type, sa.JSON)
        else column.type.dialect_impl(dialect).bind_processor(dialect)
        for column in assignments.c
    ]

    def write(conn: sa.Connection, rows: Sequence[Row]) -> None:
        params = [
            tuple(
                row[name] if encode is None else encode(row[name])
                for name, encode in zip(COLUMNS, encoders, strict=True)
            )
            for row in rows
        ]
        conn.exec_driver_sql(add_history, params)
        last_per_user = {values[0]: values for values in params}
        conn.exec_driver_sql(make_current, list(last_per_user.values()))

    return write


def _postgresql_write(dialect: Dialect) -> Write:
    names = ", ".join(COLUMNS)
    types = ", ".join(f"{column.name} {column.type.compile(dialect)}" for column in assignments.c)
    statement = (
        f"WITH given AS (SELECT * FROM ROWS FROM (json_to_recordset(%s::json) AS ({types}))"
        f" WITH ORDINALITY AS given({names}, position)),"
        f" history AS (INSERT INTO {assignment_history.name} ({names})"
        f" SELECT {names} FROM given ORDER BY position)"
        f" INSERT INTO {assignments.name} ({names})"
        f" SELECT DISTINCT ON (user_id) {names} FROM given ORDER BY user_id, position DESC"
        f" ON CONFLICT (user_id) DO UPDATE SET {_updates('EXCLUDED')}"
    )

    def write(conn: sa.Connection, rows: Sequence[Row]) -> None:
        conn.exec_driver_sql(statement, (json.dumps(rows, default=datetime.isoformat),))

    return write


def assignment_writer(dialect: Dialect) -> AssignmentWriter:
    """The way to write assignments on this database."""
    if dialect.name == "postgresql":
        return AssignmentWriter(_postgresql_write(dialect), one_statement=True)
    return AssignmentWriter(_sqlite_write(dialect), one_statement=False)
