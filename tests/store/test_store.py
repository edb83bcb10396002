import logging
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects import postgresql

from nomads_cluster import configured_app
from nomads_cluster.segmentation.interests import interest_mask
from nomads_cluster.store.engine import create_store_engine, normalize_url
from nomads_cluster.store.migrations import (
    HEAD_REVISION,
    alembic_config,
    head_revision,
    prepare_schema,
    upgrade,
)
from nomads_cluster.store.records import Assignment
from nomads_cluster.store.rooms import place_in_rooms
from nomads_cluster.store.tables import (
    SEQ_SEQUENCE,
    USER_NO_SEQUENCE,
    assignment_history,
    assignments,
    metadata,
    rooms,
)
from nomads_cluster.store.users import UserStore, default_database_url, open_store


def record(user_id, cluster=1, interests=("surf",), source="api") -> Assignment:
    return Assignment(
        user_id=user_id,
        interests=interests,
        cluster=cluster,
        scores={"1": 0.5, "2": 0.25, "3": 0.0, "5": 0.125},
        model_version="v1",
        source=source,
    )


def rows_of(store, table, user_id: str) -> int:
    with store.engine.connect() as conn:
        query = sa.select(sa.func.count()).where(table.c.user_id == user_id)
        return conn.execute(query).scalar_one()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db.example:5432/d", "postgresql+psycopg://u:p@db.example:5432/d"),
        ("postgresql://u@localhost/d", "postgresql+psycopg://u@localhost/d"),
        ("postgresql+psycopg://u@localhost/d", "postgresql+psycopg://u@localhost/d"),
        ("sqlite:////tmp/x.sqlite3", "sqlite:////tmp/x.sqlite3"),
    ],
)
def test_normalize_url_takes_herokus_urls_as_given(given, expected):
    assert normalize_url(given).render_as_string(hide_password=False) == expected


def test_default_database_is_sqlite_in_the_instance_folder(tmp_path):
    assert default_database_url(str(tmp_path)) == f"sqlite:///{tmp_path / 'nomads.sqlite3'}"


def test_start_up_migrates_an_empty_database_to_head_and_matches_the_tables(store):
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() == head_revision()
        assert compare_metadata(context, metadata) == []


def test_the_revision_start_up_expects_is_the_head_of_the_migration_scripts():
    assert head_revision() == HEAD_REVISION


def test_a_server_starting_on_a_migrated_database_does_not_import_alembic(tmp_path, engine_on):
    """Alembic weighs on every process's memory; a server only needs it to migrate."""
    url = f"sqlite:///{tmp_path / 'migrated.sqlite3'}"
    engine_on(url)
    start_up = (
        "import sys; from nomads_cluster import create_app; create_app(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))"
    )
    env = {"NOMADS_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", start_up], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_instances_starting_together_on_one_empty_sqlite_file_migrate_it_once(tmp_path, caplog):
    """Servers started at once on a new SQLite file: one creates the tables, none sees
    them without a revision (a warning) or fails creating them."""

    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    engines = [create_store_engine(url, timeout=5) for _ in range(6)]
    start = threading.Barrier(len(engines))

    def start_up(engine):
        start.wait()
        prepare_schema(engine)

    with (
        caplog.at_level(logging.INFO, logger="nomads_cluster"),
        ThreadPoolExecutor(len(engines)) as pool,
    ):
        list(pool.map(start_up, engines))  # re-raises any start-up's failure
    assert [r.message for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert sum("created the store's schema" in r.message for r in caplog.records) == 1
    with engines[0].connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head_revision()
    for engine in engines:
        engine.dispose()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path, engine_on):
    engine = engine_on(f"sqlite:///{tmp_path / 's.sqlite3'}", revision=None, timeout=2.5)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_saved_assignment_is_current_and_in_history(store):
    saved = record("u1", cluster=3)
    store.assignments.save([saved])
    assert store.assignments.current("u1") == saved
    assert store.assignments.history("u1", limit=10) == [saved]


def test_a_new_assignment_replaces_the_current_one_and_history_is_newest_first(store):
    first, second = record("u1", cluster=1), record("u1", cluster=2, interests=("coffee",))
    store.assignments.save([first])
    store.assignments.save([second])
    assert store.assignments.current("u1") == second
    assert store.assignments.history("u1", limit=10) == [second, first]
    assert store.assignments.history("u1", limit=1) == [second]


def test_several_records_of_one_user_in_one_save_keep_the_last(store):
    first, second = record(7, cluster=1), record(7, cluster=4)
    store.assignments.save([first, second])
    assert store.assignments.current("7") == second
    assert store.assignments.history("7", limit=10) == [second, first]


@pytest.mark.parametrize("user_id", [42, 2**70, -3, "42a", "ü ñ"])
def test_user_id_keeps_its_json_type(store, user_id):
    store.assignments.save([record(user_id)])
    assert store.assignments.current(str(user_id)).user_id == user_id


def test_assigned_at_comes_back_with_its_time_zone(store):
    saved = record("t")
    store.assignments.save([saved])
    assigned_at = store.assignments.current("t").assigned_at
    assert assigned_at == saved.assigned_at
    assert assigned_at.utcoffset() is not None
    assert assigned_at <= datetime.now(UTC)


def test_unknown_user_has_no_assignment(store):
    assert store.assignments.current("nobody") is None
    assert store.assignments.history("nobody", limit=10) == []


def test_erasure_leaves_nothing_of_the_user_and_spares_the_others(store):
    store.assignments.save([record("gone"), record("gone", cluster=2), record("stays")])
    assert store.assignments.erase("gone") is True
    assert rows_of(store, assignments, "gone") == 0
    assert rows_of(store, assignment_history, "gone") == 0
    assert store.assignments.current("stays") is not None
    assert store.assignments.erase("gone") is False


def test_survey_answers_are_ingested_once(store):
    now = datetime.now(UTC)
    rows = [
        {
            "answer_sha256": f"{i:064x}",
            "answered_at": "10/20/2021 17:21:42",
            "interests": ["surf", "coffee"][: i + 1],
            "source_file": "survey.csv",
            "ingested_at": now,
        }
        for i in range(2)
    ]
    assert store.survey.add(rows) == 2
    assert store.survey.add(rows) == 0
    features, hashes = store.survey.features()
    assert features.shape == (2, 26)
    assert features.sum(axis=1).tolist() == [1.0, 2.0]
    assert hashes == [row["answer_sha256"] for row in rows]


COLUMNS_OF_0001 = (
    "user_id",
    "id_is_int",
    "interests",
    "cluster",
    "scores",
    "model_version",
    "assigned_at",
    "source",
)


def insert_as_of_0001(conn, table, rows) -> None:
    """Rows as the first schema held them."""
    old = sa.table(
        table.name, *(sa.column(c.name, c.type) for c in table.c if c.name in COLUMNS_OF_0001)
    )
    conn.execute(old.insert(), [{k: row[k] for k in COLUMNS_OF_0001} for row in rows])


def test_migration_0003_numbers_existing_users_and_gives_them_no_room(database_url, engine_on):
    engine = engine_on(database_url, revision=None)
    upgrade(engine, "0002")
    old = [
        record(user_id).as_row() | {"interests": interests}
        for user_id, interests in (("b", ["surf", "coffee"]), ("a", []), ("c", ["sushi"]))
    ]
    with engine.begin() as conn:
        insert_as_of_0001(conn, assignments, old)
    upgrade(engine)
    store = UserStore(engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(assignments).order_by(assignments.c.user_id)).all()
    assert [row.user_no for row in rows] == [1, 2, 3]  # in user id order
    assert [row.seq for row in rows] == [1, 2, 3]
    assert [row.interest_mask for row in rows] == [
        interest_mask([]),
        interest_mask(["surf", "coffee"]),
        interest_mask(["sushi"]),
    ]
    assert {row.room_id for row in rows} == {None}
    # New users are numbered after them, on both databases.
    store.assignments.save([record("d")])
    assert store.assignments.current("d") is not None
    with engine.connect() as conn:
        new = conn.execute(sa.select(assignments).where(assignments.c.user_id == "d")).one()
    assert (new.user_no, new.seq) == (4, 4)


def test_migration_0004_counts_the_members_of_rooms_opened_before_it(database_url, engine_on):
    engine = engine_on(database_url, revision=None)
    upgrade(engine)
    store = UserStore(engine, room_size=2)
    cities = ["Madrid", "Madrid", "Madrid", "Paris", None]
    store.assignments.save([replace(record(i), city=city) for i, city in enumerate(cities)])
    with engine.begin() as conn:  # back to rooms without counts, and their triggers
        command.downgrade(alembic_config(conn), "0003")
        conn.execute(assignments.update().where(assignments.c.user_id == "0").values(room_id=None))
        assert "members" not in {c["name"] for c in sa.inspect(conn).get_columns("rooms")}
    upgrade(engine)
    with engine.connect() as conn:
        counts = dict(conn.execute(sa.select(rooms.c.id, rooms.c.members)).all())
    assert counts == {"madrid-1": 1, "madrid-1-2": 1, "paris-1": 1}
    store.assignments.save([replace(record("5"), city="Madrid")])  # the triggers are back
    assert store.rooms.get("madrid-1").members == 2


def save_before_0009(engine: sa.Engine, records: list[Assignment], room_size: int) -> None:
    """Store the records as a writer before 0009 did on PostgreSQL: placed in Python,
    then written (each user once)."""
    with engine.begin() as conn:
        rows = [record.as_row() for record in records]
        place_in_rooms(conn, rows, room_size)
        numbered = [
            row | {"user_no": USER_NO_SEQUENCE.next_value(), "seq": SEQ_SEQUENCE.next_value()}
            for row in rows
        ]
        insert = postgresql.insert(assignments).values(numbered)
        changed = {name: insert.excluded[name] for name in rows[0] if name != "user_id"}
        conn.execute(insert.on_conflict_do_update(index_elements=["user_id"], set_=changed))


def test_room_counts_stay_exact_across_migration_0008_both_ways(database_url, engine_on):
    """0008 moves PostgreSQL's counts from one update per member to one per room and
    statement (SQLite keeps 0004's): counts stay exact on either side of it."""
    engine = engine_on(database_url)
    store = UserStore(engine, room_size=2)
    downgraded = False

    def save(cities: list[str | None]) -> None:
        records = [replace(record(i), city=c) for i, c in enumerate(cities)]
        if downgraded and engine.dialect.name == "postgresql":
            save_before_0009(engine, records, store.room_size)
        else:
            store.assignments.save(records)

    def assert_counts_exact() -> None:
        with engine.connect() as conn:
            counted = conn.execute(
                sa.select(assignments.c.room_id, sa.func.count())
                .where(assignments.c.room_id.is_not(None))
                .group_by(assignments.c.room_id)
            ).all()
            kept = conn.execute(sa.select(rooms.c.id, rooms.c.members)).all()
        assert {room: n for room, n in kept if n} == dict(counted)

    save(["Madrid", "Madrid", "Madrid", "Paris", None])
    assert_counts_exact()
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0007")
    downgraded = True
    save(["Paris", "Madrid", None, "Madrid", "Oslo"])  # moves, leaves, joins
    store.assignments.erase("4")
    assert_counts_exact()
    upgrade(engine)
    downgraded = False
    save(["Oslo", "Oslo", "Oslo", None, "Madrid", "Madrid"])
    assert_counts_exact()
    store.assignments.erase("0")
    assert_counts_exact()


def test_migration_0002_keys_stored_scores_by_segment_and_back(database_url, engine_on):
    engine = engine_on(database_url, revision=None)
    upgrade(engine, "0001")  # scores were lists, position i being segment i + 1
    row = record("old").as_row() | {"scores": [0.5, 0.0, 0.25, 0.125]}
    with engine.begin() as conn:
        insert_as_of_0001(conn, assignments, [row])
        insert_as_of_0001(conn, assignment_history, [row, row | {"cluster": 3}])
    upgrade(engine)
    by_segment = {"1": 0.5, "2": 0.0, "3": 0.25, "4": 0.125}
    with engine.connect() as conn:
        assert conn.execute(sa.select(assignments.c.scores)).scalars().all() == [by_segment]
        history = conn.execute(sa.select(assignment_history.c.scores)).scalars().all()
        assert history == [by_segment, by_segment]
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0001")
    with engine.connect() as conn:
        assert conn.execute(sa.select(assignments.c.scores)).scalar_one() == row["scores"]


def test_requests_statements_are_bounded_and_commands_are_not(config_for, postgres_url, tmp_path):
    """A request's statement fails after DATABASE_TIMEOUT; a command's bulk chunk may
    run as long as it needs."""
    config = configured_app(config_for(postgres_url, DATABASE_TIMEOUT=2)).config
    for for_commands, expected in ((False, "2s"), (True, "0")):
        store = open_store(config, str(tmp_path), for_commands=for_commands)
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == expected
        store.engine.dispose()


def test_commands_keep_more_of_a_sqlite_store_in_memory_than_requests(config_for, tmp_path):
    """A command's bulk load keeps SQLite's pages and statement journals in memory; a
    server's connections keep SQLite's defaults."""
    config = configured_app(config_for(f"sqlite:///{tmp_path / 'store.sqlite3'}")).config
    settings = {}
    for for_commands in (False, True):
        store = open_store(config, str(tmp_path), for_commands=for_commands)
        with store.engine.connect() as conn:
            pragmas = ("cache_size", "temp_store")
            settings[for_commands] = [conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in pragmas]
        store.engine.dispose()
    (request_cache, request_temp), (command_cache, command_temp) = settings.values()
    assert command_temp == 2 != request_temp  # MEMORY
    assert -command_cache > 100 * -request_cache  # in KiB (a negative size)
