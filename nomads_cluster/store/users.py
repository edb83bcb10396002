"""The user store: every assignment made, the current one per user, rooms, similar
users and survey answers, each part in its own module.

SQLAlchemy Core on SQLite (the embedded default, in the instance folder) or PostgreSQL
through psycopg 3 (``engine.py``). The schema is Alembic's (``migrations/``): applied by
``nomads-cluster db upgrade``, and at start-up when the database is empty.
"""

import ctypes
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flask import Flask, current_app
from sqlalchemy.engine import Engine

from ..metrics.registry import Counter
from .assignments import Assignments
from .database import Database
from .engine import UNAVAILABLE_ERRORS, StoreUnavailable, create_store_engine
from .lifecycle import Lifecycle
from .neighbours import SimilarUsers
from .rooms import Rooms
from .survey import SurveyAnswers

SQLITE_FILE = "nomads.sqlite3"

ASSIGNMENTS = Counter(
    "nomads_assignments", "Users assigned and stored, by segment.", ["segment", "source"]
)
STORE_ERRORS = Counter("nomads_store_errors", "Requests that found the store unavailable.")


def count_assignments(segments: Iterable[int], source: str) -> None:
    for segment in segments:
        ASSIGNMENTS.labels(segment=str(segment), source=source).inc()


class UserStore(Database):
    """The store: its database, and a part for each concern, each with its own module.
    Database failures come out of every part as StoreUnavailable."""

    def __init__(self, engine: Engine, timeout: float = 3, room_size: int = 250):
        super().__init__(engine, timeout)
        self.room_size = room_size
        self.assignments = Assignments(self, room_size)
        self.rooms = Rooms(self, room_size)
        self.similar_users = SimilarUsers(self)
        self.survey = SurveyAnswers(self)
        self.lifecycle = Lifecycle(self, room_size)


def default_database_url(instance_path: str) -> str:
    return f"sqlite:///{Path(instance_path) / SQLITE_FILE}"


def open_store(
    config: Mapping[str, Any], instance_path: str, *, for_commands: bool = False
) -> UserStore:
    """The store of DATABASE_URL (default: SQLite in the instance folder), its schema
    made sure of: an empty database gets every migration. Each statement fails after
    DATABASE_TIMEOUT, as a request's must, except ``for_commands`` (bulk writes that
    may rightly run longer: ``create_store_engine``)."""
    from .migrations import prepare_schema

    url = config.get("DATABASE_URL") or default_database_url(instance_path)
    timeout = float(config["DATABASE_TIMEOUT"])
    engine = create_store_engine(
        url, timeout, bound_statements=not for_commands, bulk_writes=for_commands
    )
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


def preload(store: UserStore) -> None:
    """Read now what the store's readers share (the similar users' interest sets), as a
    server does before it forks its workers: they share it, and none waits for it on a
    first request. Start-up work, not a request: no statement timeout (a large store
    takes seconds). No connection of it survives into the workers."""
    unbounded = create_store_engine(store.engine.url, store.timeout, bound_statements=False)
    try:
        store.similar_users.load(Database(unbounded, store.timeout))
    finally:
        unbounded.dispose()
        store.engine.dispose()
    _give_back_freed_memory()


def _give_back_freed_memory() -> None:
    """glibc keeps the memory of a large answer freed (the first read of the interest
    sets: tens of megabytes at millions of users) in the process, and the workers
    forked next would each inherit it: hand it back to the system (without glibc,
    nothing to do)."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def init_app(app: Flask) -> None:
    app.extensions["user_store"] = open_store(app.config, app.instance_path)


def get_store() -> UserStore:
    return current_app.extensions["user_store"]
