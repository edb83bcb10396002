"""Alembic migrations of the store, run from code: no alembic.ini to keep in step.

Alembic is imported only to migrate: a server starting on a migrated database (the
release phase migrated it) checks the revision with one query, and its processes do
not carry Alembic's modules.
"""

import logging
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..engine import advisory_lock, writer_lock

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

# Migrations of several processes starting on one empty PostgreSQL database queue here.
_LOCK_KEY = 0x6E6F6D616473  # "nomads"
MIGRATION_LOCK_SECONDS = 60  # how long a process waits for another's migrations
HEAD_REVISION = "0010"  # the last of versions/ (a test checks it is Alembic's head)


def alembic_config(connection: sa.Connection | None = None) -> "Config":
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The head of the migration scripts, as Alembic reads them."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _current_revision(connection: sa.Connection) -> str | None:
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def _migrating_alone(engine: Engine) -> AbstractContextManager[None]:
    """Several processes starting on one empty SQLite file take turns (PostgreSQL's
    turns are an advisory lock inside the migration's transaction)."""
    lock = writer_lock(engine, MIGRATION_LOCK_SECONDS)
    return nullcontext() if lock is None else lock.held()


def _upgrade(engine: Engine, revision: str) -> tuple[str | None, str | None]:
    from alembic import command

    with engine.begin() as connection:
        advisory_lock(connection, _LOCK_KEY)
        before = _current_revision(connection)
        command.upgrade(alembic_config(connection), revision)
        return before, _current_revision(connection)


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Apply the migrations up to ``revision``; the revisions before and after."""
    with _migrating_alone(engine):
        return _upgrade(engine, revision)


def prepare_schema(engine: Engine) -> str | None:
    """At start-up: migrate an empty database; warn when a used one is behind the code.
    The revision the database is at."""
    with _migrating_alone(engine):
        with engine.connect() as connection:
            current = _current_revision(connection)
            empty = current is None and not sa.inspect(connection).get_table_names()
        if empty:
            before, after = _upgrade(engine, "head")
            if before is None:
                log.info("created the store's schema (revision %s)", after)
            return after
    if current != HEAD_REVISION:
        log.warning(
            "the database schema is at revision %s, this code expects %s: "
            "run `nomads-cluster db upgrade`",
            current,
            HEAD_REVISION,
        )
    return current
