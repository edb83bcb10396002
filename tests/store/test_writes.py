import random

import pytest
import sqlalchemy as sa

from nomads_cluster.store.engine import create_store_engine
from nomads_cluster.store.migrations import upgrade
from nomads_cluster.store.records import Assignment
from nomads_cluster.store.tables import assignment_history, assignments
from nomads_cluster.store.users import UserStore
from nomads_cluster.store.writes import COLUMNS, HISTORY_COLUMNS


def test_a_row_fills_every_column_but_the_numbers_the_database_gives():
    row = Assignment(user_id=1, interests=(), cluster=1, scores={}, model_version="v").as_row()
    assert set(row) == set(COLUMNS)
    assert [c.name for c in assignments.c] == [*COLUMNS, "user_no", "seq"]
    assert [c.name for c in assignment_history.c] == ["id", *HISTORY_COLUMNS]
    assert set(HISTORY_COLUMNS) < set(COLUMNS)


def test_a_group_with_repeated_users_stores_every_row_and_the_last_of_each(store):
    rng = random.Random(7)
    group = [
        Assignment(
            user_id=rng.choice([1, 2, "a", "b", "ü"]),
            interests=tuple(rng.sample(["surf", "coffee", "museums"], rng.randint(0, 3))),
            cluster=rng.randint(1, 4),
            scores={str(n): rng.random() for n in range(1, 5)},
            model_version=rng.choice(["v1", "v2"]),
        )
        for _ in range(40)
    ]
    store.assignments.save(group)
    for user_id in {str(record.user_id) for record in group}:
        theirs = [record for record in group if str(record.user_id) == user_id]
        assert store.assignments.current(user_id) == theirs[-1]
        assert store.assignments.history(user_id, limit=100) == theirs[::-1]


def test_a_group_that_fails_stores_nothing_of_it(store):
    """On PostgreSQL the group is one statement outside a transaction: atomic alone."""
    good = Assignment("good", ("surf",), 1, {"1": 1.0}, "v1")
    bad = Assignment("bad", ("surf",), None, {"1": 1.0}, "v1")  # cluster is NOT NULL
    with pytest.raises(sa.exc.IntegrityError):
        store.assignments.save([good, bad])
    assert store.assignments.current("good") is None
    assert store.assignments.history("good", limit=10) == []


def test_on_postgresql_a_write_finds_its_users_by_their_key(postgres_url):
    """The write statement reads its users' current rows (to lock them and their rooms)
    through the primary key. Its rows come as one JSON parameter, which the planner
    takes for a hundred rows: matched against them, the planner would read the table
    whole at every write."""

    def user(user_id: str) -> Assignment:
        return Assignment(user_id, ("surf",), 1, {"1": 1.0}, "v1")

    store = UserStore(create_store_engine(postgres_url, timeout=30), timeout=30)
    try:
        upgrade(store.engine)
        store.assignments.save([user(str(n)) for n in range(5000)])
        with store.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE assignments")
            conn.commit()
        sent = []

        @sa.event.listens_for(store.engine, "before_cursor_execute")
        def keep(conn, cursor, statement, parameters, context, executemany):
            sent.append((statement, parameters))

        store.assignments.save([user("7")])
        sa.event.remove(store.engine, "before_cursor_execute", keep)
        ((statement, parameters),) = [s for s in sent if s[0].lstrip().startswith("WITH given")]
        with store.engine.connect() as conn:
            plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
            nodes, scans = [plan.scalar_one()[0]["Plan"]], []
            while nodes:
                node = nodes.pop()
                nodes.extend(node.get("Plans", []))
                scans.append((node["Node Type"], node.get("Relation Name")))
        assert ("Seq Scan", "assignments") not in scans, scans
        assert ("Index Scan", "assignments") in scans, scans
    finally:
        store.engine.dispose()
