"""The store's database: its engine, and the one way every part of the store runs its
work on it (``Database.run``), which turns a database failure into StoreUnavailable."""

from contextlib import nullcontext
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .engine import UNAVAILABLE_ERRORS, StoreUnavailable, writer_lock

# A write PostgreSQL chose to fail so that another could go on (deadlock_detected) was
# rolled back whole: it is run again. (Writes lock in one order, writes.py: none is
# known to deadlock; this is the net under that rule.)
DEADLOCK_SQLSTATE = "40P01"
WRITE_ATTEMPTS = 3


class Database:
    """The engine, its dialect's INSERT, and ``run``."""

    def __init__(self, engine: Engine, timeout: float = 3):
        self.engine = engine
        self.timeout = timeout
        self.schema_revision: str | None = None  # as found at start-up (open_store)
        self._writer_lock = writer_lock(engine, timeout)
        # Upserts and insert-or-skip are dialect-specific statements.
        if engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        self.insert = insert  # the dialect's INSERT, which has ON CONFLICT
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

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        self.run(lambda conn: conn.execute(sa.text("SELECT 1")), write=False)
