import random

import pytest
import sqlalchemy as sa

from nomads_cluster.store.tables import assignment_history, assignments
from nomads_cluster.store.users import Assignment
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
    store.save(group)
    for user_id in {str(record.user_id) for record in group}:
        theirs = [record for record in group if str(record.user_id) == user_id]
        assert store.current(user_id) == theirs[-1]
        assert store.history(user_id, limit=100) == theirs[::-1]


def test_a_group_that_fails_stores_nothing_of_it(store):
    """On PostgreSQL the group is one statement outside a transaction: atomic alone."""
    good = Assignment("good", ("surf",), 1, {"1": 1.0}, "v1")
    bad = Assignment("bad", ("surf",), None, {"1": 1.0}, "v1")  # cluster is NOT NULL
    with pytest.raises(sa.exc.IntegrityError):
        store.save([good, bad])
    assert store.current("good") is None
    assert store.history("good", limit=10) == []
