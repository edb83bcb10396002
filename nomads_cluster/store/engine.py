"""Engines for SQLite (the embedded default) and PostgreSQL (through psycopg 3) that
answer or fail within the configured timeout, and the SQLite writers' queue."""

import fcntl
import os
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine, make_url

from ..errors import ServiceError

PING_AFTER_IDLE_SECONDS = 1.0
# Values in one IN list of a SQLite statement: far below its limit on parameters.
VALUES_PER_IN_LIST = 500
# PostgreSQL advisory lock keys (the migrations' is 0x6E6F6D616473, "nomads").
# Writers of assignments and events hold it shared until they commit; the similar-users
# index and the change feed take it exclusive for a moment, to wait for those in flight.
CHANGES_LOCK = 0x6E6F6D616474
# The errors that mean "the database cannot be reached or is too busy", not a bug.
UNAVAILABLE_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


class StoreUnavailable(ServiceError, RuntimeError):
    """The database cannot be reached (or stays locked) right now: try again later."""


def normalize_url(url: str | URL) -> URL:
    """The SQLAlchemy URL of a database URL, Heroku's ``postgres://`` included.

    PostgreSQL always goes through psycopg 3 (SQLAlchemy would pick psycopg2).
    """
    if isinstance(url, str) and url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    url = make_url(url)
    if url.get_backend_name() == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url


def as_utc(moment: datetime) -> datetime:
    """A time read back from the store, in UTC: SQLite keeps no zone, and the store
    writes UTC only."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite database; None for another database or one in memory."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def create_store_engine(
    url: str | URL, timeout: float, *, bound_statements: bool = True, bulk_writes: bool = False
) -> Engine:
    """An engine that answers or fails within about ``timeout`` seconds
    (``bound_statements=False``: connecting and waiting for a lock only, for the
    commands, whose bulk statements may rightly run longer than any request).
    ``bulk_writes``: SQLite keeps more of the file's pages, and its statements'
    journals, in memory (a command that loads many rows).

    SQLite: WAL (readers never wait for the writer), a busy timeout (writers queue
    instead of failing with "database is locked"), synchronous=FULL (a committed
    assignment survives a power cut, not only a crash). PostgreSQL: connect, TCP and
    statement timeouts, and a ping before using a connection that has been idle, so
    that a server restarted meanwhile is noticed before a request uses a dead one.
    """
    url = normalize_url(url)
    if url.get_backend_name() == "sqlite":
        if (database := sqlite_file(url)) is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": timeout})
        pragmas = ("journal_mode=WAL", "synchronous=FULL")
        if bulk_writes:
            # A bulk load adds to every index at random places: with SQLite's default
            # 2 MB of pages it rereads most of them from the file. 256 MB, per command.
            # Its statements' journals (the pages a statement changed, kept until it
            # ends) in memory rather than in a temporary file written page by page.
            pragmas += ("cache_size=-262144", "temp_store=MEMORY")
    else:
        engine = sa.create_engine(
            url,
            pool_timeout=timeout,
            connect_args={
                "connect_timeout": max(1, round(timeout)),
                # A server gone silent (network cut, not a refusal) fails the next
                # statement after this long instead of after minutes of TCP retries.
                "tcp_user_timeout": int(timeout * 1000),
            },
        )
        pragmas = ()
        _ping_when_idle(engine)

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if pragmas:
            for pragma in pragmas:
                cursor.execute(f"PRAGMA {pragma}")
        elif bound_statements:
            cursor.execute(f"SET statement_timeout = {int(timeout * 1000)}")
            dbapi_connection.commit()
        cursor.close()

    # A forked worker must not share its parent's connections (gunicorn --preload).
    forked = weakref.ref(engine)
    os.register_at_fork(after_in_child=lambda: forked() and forked().dispose(close=False))
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Ping a connection before its use only when it has been idle PING_AFTER_IDLE_SECONDS.

    SQLAlchemy's pool_pre_ping pings at every checkout: a round trip per group commit,
    a good part of a small write's time. A connection in steady use needs none;
    if the server went away while it was in use, the write fails (503, and SQLAlchemy
    replaces the pool's connections) and the next one reconnects.
    """

    @sa.event.listens_for(engine, "checkin")
    def _idle_from_now(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool throws this connection away and checks out another.
            raise sa_exc.DisconnectionError(str(exc)) from exc


def advisory_lock(conn: sa.Connection, *keys: int, shared: bool = False) -> None:
    """On PostgreSQL, hold the advisory locks ``keys`` (exclusive, or ``shared``) until
    the transaction ends, taken in the order given, in one statement; elsewhere nothing
    (SQLite's writers already take turns)."""
    if conn.dialect.name != "postgresql" or not keys:
        return
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    conn.exec_driver_sql(
        f"SELECT {function}(key) FROM unnest(%s::bigint[])"
        " WITH ORDINALITY AS taken(key, position) ORDER BY position",
        (list(keys),),
    )


def sqlite_in_lists(
    conn: sa.Connection, query: str, values: Sequence[tuple], after: tuple = ()
) -> list[sa.Row]:
    """The rows of ``query`` on SQLite, its ``{}`` an IN list of ``values`` (each a
    tuple: one value, or a row value), VALUES_PER_IN_LIST at a time; ``after``: the
    parameters that follow the list."""
    found: list[sa.Row] = []
    for start in range(0, len(values), VALUES_PER_IN_LIST):
        chunk = values[start : start + VALUES_PER_IN_LIST]
        marks = ", ".join("(" + ", ".join("?" * len(value)) + ")" for value in chunk)
        parameters = (*(part for value in chunk for part in value), *after)
        found += conn.exec_driver_sql(query.format(marks), parameters).all()
    return found


class WriterLock:
    """One writer at a time on a SQLite file, across processes, woken at once.

    SQLite lets one writer in and makes the others retry, sleeping up to 100 ms between
    tries: two gunicorn workers' committers would spend their time asleep. An advisory
    lock on a file beside the database queues them instead (flock, released by the
    kernel if its holder dies). It only orders writers; SQLite's locking still keeps the
    data safe from any writer that does not take it.
    """

    POLL_SECONDS = 0.0002

    def __init__(self, path: Path, timeout: float):
        self.path = path
        self.timeout = timeout
        self._threads = threading.Lock()  # flock is per open file: threads queue here
        self._pid: int | None = None
        self._fd = -1

    @contextmanager
    def held(self) -> Iterator[None]:
        if not self._threads.acquire(timeout=self.timeout):
            raise StoreUnavailable("the database stayed locked by another writer")
        try:
            if self._pid != os.getpid():  # a forked child must not share its parent's file
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                self._pid = os.getpid()
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StoreUnavailable(
                            "the database stayed locked by another writer"
                        ) from None
                    time.sleep(self.POLL_SECONDS)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()


def writer_lock(engine: Engine, timeout: float) -> WriterLock | None:
    """The writers' queue of a SQLite file database; None where the database keeps its
    own (PostgreSQL) or is one process's alone (in memory)."""
    database = sqlite_file(engine.url)
    return None if database is None else WriterLock(Path(f"{database}.lock"), timeout)
