"""Waiting, in a test, until a PostgreSQL session is blocked on a lock."""

import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine


def wait_until_blocked(
    engine: Engine, waiter: threading.Thread, locktype: str | None, passed: str, never: str
) -> None:
    """Return once a lock (of ``locktype``, or any) is waited for on the server; fail
    with ``passed`` if ``waiter`` ends first, with ``never`` if no wait ever shows."""
    query = "SELECT count(*) FROM pg_locks WHERE NOT granted"
    if locktype is not None:
        query += " AND locktype = :locktype"
    with engine.connect() as conn:
        for _ in range(30_000):  # a guard against hanging, not a timing
            if conn.execute(sa.text(query), {"locktype": locktype}).scalar_one():
                return
            assert waiter.is_alive(), passed
    pytest.fail(never)
