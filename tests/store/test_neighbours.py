"""Similar users: the exact top k by Jaccard, equal to brute force, following the store
through new users, changes and erasures."""

import itertools
import random
import threading
from dataclasses import replace

import numpy as np
import pytest
import sqlalchemy as sa
from helpers.pg_locks import wait_until_blocked
from hypothesis import given
from hypothesis import strategies as st

from nomads_cluster.cities import city_key
from nomads_cluster.segmentation.interests import INTEREST_KEYS, interest_mask
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, load_model
from nomads_cluster.store import neighbours
from nomads_cluster.store.neighbours import (
    PROBE_AT_LEAST,
    SIMILARITIES,
    MaskSet,
    ranked_batches,
    similarity_levels,
)
from nomads_cluster.store.reassign import reassign
from nomads_cluster.store.records import Assignment
from nomads_cluster.store.tables import assignments
from nomads_cluster.store.users import UserStore, preload
from nomads_cluster.store.writes import assignment_writer

CITIES = ["Madrid", "Paris", None]


def brute_force_jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


masks_and_one = (
    st.lists(st.integers(0, 2**26 - 1), min_size=1, max_size=60, unique=True),
    st.integers(0, 2**26 - 1),
)


def keys(m: int) -> set:
    return {k for i, k in enumerate(INTEREST_KEYS) if m >> i & 1}


@given(*masks_and_one)
def test_a_masks_level_is_its_jaccard_with_the_interest_sets(masks, mask):
    levels = similarity_levels(np.array(masks, np.int32), mask)
    expected = [brute_force_jaccard(keys(m), keys(mask)) for m in masks]
    assert SIMILARITIES[levels].tolist() == expected


@given(*masks_and_one)
def test_batches_hold_every_set_sharing_an_interest_once_best_levels_first(masks, mask):
    batches = list(ranked_batches(np.array(masks, np.int32), mask))
    sharing = sorted(m for m in masks if keys(m) & keys(mask))
    assert sorted(m for got, _ in batches for m in got.tolist()) == sharing
    for got, levels in batches:
        expected = [similarity_levels(np.array([m], np.int32), mask)[0] for m in got.tolist()]
        assert levels.tolist() == expected
    bounds = [(levels.min(), levels.max()) for _, levels in batches]
    assert all(high < low for (_, high), (low, _) in itertools.pairwise(bounds))
    assert all(len(got) >= PROBE_AT_LEAST for got, _ in batches[:-1])


@given(st.lists(st.lists(st.integers(0, 300), max_size=30), max_size=8))
def test_a_mask_set_holds_each_mask_added_once_through_its_merges(rounds):
    masks = MaskSet(compact_at=10)
    for added in rounds:
        masks.add(np.array(added, np.int32))
    expected = sorted({m for added in rounds for m in added})
    assert sorted(masks.array().tolist()) == expected


def random_users(rng: random.Random, n: int, prefix: str) -> list[Assignment]:
    return [
        Assignment(
            user_id=f"{prefix}{i}" if i % 4 else i,
            # Few interests, so that many similarities tie.
            interests=tuple(k for k in INTEREST_KEYS[:8] if rng.random() < 0.35),
            cluster=rng.randint(1, 4),
            scores={"1": 0.1},
            model_version="v1",
            city=rng.choice(CITIES),
        )
        for i in range(n)
    ]


def brute_force_similar(stored: dict, order: list, me: Assignment, k: int, same_city: bool):
    """(user id, similarity) of the k most similar, ties by the order they were stored."""
    mine = set(me.interests)
    others = [
        (brute_force_jaccard(mine, set(stored[u].interests)), -order.index(u), u)
        for u in stored
        if u != str(me.user_id) and (not same_city or stored[u].city == me.city)
    ]
    best = sorted(others, reverse=True)[:k]
    return [(u, similarity) for similarity, _, u in best]


def check_against_brute_force(store, stored, order, rng, queries=12) -> None:
    for user_id in rng.sample(sorted(stored), queries):
        me = stored[user_id]
        for same_city in [False, True] if me.city else [False]:
            # 100: past the first sets asked, often past those that share an interest
            k = rng.choice([1, 5, 10, 30, 100])
            found_me, neighbours = store.similar_users.find(user_id, k, same_city)
            got = [(str(other.user_id), n.similarity) for n, other in neighbours]
            assert got == brute_force_similar(stored, order, me, k, same_city)
            assert found_me.user_id == me.user_id
            for n, other in neighbours:
                assert n.mask == interest_mask(stored[str(other.user_id)].interests)


def test_similar_users_equal_brute_force_as_the_store_changes(store):
    rng = random.Random(21)
    stored: dict[str, Assignment] = {}
    order: list[str] = []  # user ids in the order they were first stored

    def save(users):
        store.assignments.save(users)
        for u in users:
            if str(u.user_id) not in stored:
                order.append(str(u.user_id))
            stored[str(u.user_id)] = u

    save(random_users(rng, 150, "a"))
    check_against_brute_force(store, stored, order, rng)
    # Users who share no interest with anyone: every other user is as dissimilar.
    loners = [
        Assignment(
            user_id=f"loner{i}",
            interests=(INTEREST_KEYS[20 + i],),
            cluster=1,
            scores={"1": 0.1},
            model_version="v1",
            city="Madrid",
        )
        for i in range(3)
    ]
    save(loners)
    check_against_brute_force(store, stored, order, rng, queries=len(stored))
    # New users, and changed ones (new interests, another city): the index follows.
    save(random_users(rng, 60, "b") + random_users(rng, 40, "a"))
    check_against_brute_force(store, stored, order, rng)
    # Erased users are gone from every answer, and never come back in one.
    for user_id in rng.sample(sorted(stored), 15):
        assert store.assignments.erase(user_id)
        del stored[user_id]
        order.remove(user_id)
    check_against_brute_force(store, stored, order, rng)


def test_the_queries_statements_come_in_a_few_shapes_whatever_the_sets_asked(store):
    """A connection keeps the statements it last ran compiled (sqlite3: 128 of them):
    one per number of sets asked would fill that with large ones in every worker."""
    rng = random.Random(5)
    users = [
        replace(u, interests=tuple(k for k in INTEREST_KEYS if rng.random() < 0.3))
        for u in random_users(rng, 400, "s")
    ]
    store.assignments.save(users)
    ran = set()

    def keep(conn, cursor, statement, *_):
        if "interest_mask =" in statement:
            ran.add(statement)

    sa.event.listen(store.engine, "before_cursor_execute", keep)
    for user in rng.sample(users, 60):
        for same_city in (False, True):
            store.similar_users.find(str(user.user_id), rng.choice([5, 30, 100]), same_city)
    shapes_per_kind = (neighbours.SETS_PER_STATEMENT - 1).bit_length() + 1  # 1, 2, 4, ...
    assert 0 < len(ran) <= 2 * shapes_per_kind  # of all users, of a city


def change_numbers(store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return dict(conn.execute(sa.select(assignments.c.user_id, assignments.c.seq)).all())


def test_a_backlog_of_changed_sets_is_taken_in_a_bounded_read_at_a_time(store, monkeypatch):
    """Past CATCH_UP_ROWS changed users since the last query, a process takes them in a
    statement at a time (each bounded by the request path's timeout): none missed."""
    monkeypatch.setattr(neighbours, "CATCH_UP_ROWS", 7)
    rng = random.Random(31)
    users = random_users(rng, 20, "a")
    store.assignments.save(users)
    store.similar_users.find("a1", 5, False)  # the sets, as of now
    stored = {str(u.user_id): u for u in users}
    order = [str(u.user_id) for u in users]
    later = random_users(rng, 45, "b") + random_users(rng, 12, "a")  # new, and changed
    store.assignments.save(later)
    for u in later:
        if str(u.user_id) not in stored:
            order.append(str(u.user_id))
        stored[str(u.user_id)] = u
    check_against_brute_force(store, stored, order, rng, queries=20)


def test_a_user_keeps_their_change_number_until_their_set_or_city_changes(store):
    """The sets follow the change numbers: re-scoring every user (``reassign``) or
    storing a user again as they were leaves them nothing to read."""
    users = random_users(random.Random(9), 30, "r")
    store.assignments.save(users)
    before = change_numbers(store)
    report = reassign(store, load_model(DEFAULT_MODEL_DIR))
    assert report.reassigned == len(users)
    store.assignments.save([replace(users[1], cluster=users[1].cluster % 4 + 1)])
    assert change_numbers(store) == before
    moved = replace(users[2], city="Oslo" if users[2].city != "Oslo" else "Madrid")
    changed = replace(users[3], interests=(*users[3].interests, INTEREST_KEYS[20]))
    store.assignments.save([moved, changed])
    after = change_numbers(store)
    renumbered = {user_id for user_id in before if after[user_id] != before[user_id]}
    assert renumbered == {str(moved.user_id), str(changed.user_id)}
    assert min(after[user_id] for user_id in renumbered) > max(before.values())


def test_a_user_is_never_their_own_neighbour_nor_unknown_users_found(store):
    store.assignments.save(random_users(random.Random(2), 3, "x"))
    me, neighbours = store.similar_users.find("x1", 10, False)
    assert me.user_id == "x1" and "x1" not in [o.user_id for _, o in neighbours]
    assert len(neighbours) == 2
    assert store.similar_users.find("nobody", 10, False) is None


@pytest.mark.parametrize("erase_first", [False, True])
def test_two_stores_on_one_database_see_each_others_writes(store, erase_first):
    # As two workers or instances: each has its own index, following the database.

    other = UserStore(store.engine)
    store.assignments.save(random_users(random.Random(4), 20, "y"))
    assert len(other.similar_users.find("y1", 50, False)[1]) == 19
    if erase_first:
        store.assignments.erase("y2")
    store.assignments.save(
        [Assignment(user_id="new", interests=("surf",), cluster=1, scores={}, model_version="v1")]
    )
    ids = [o.user_id for _, o in other.similar_users.find("y1", 50, False)[1]]
    assert "new" in ids and ("y2" not in ids) == erase_first


def test_on_postgresql_the_index_waits_for_writers_in_flight(make_app, config_for, postgres_url):
    """A write in flight holds a change number; the index must not move past it before
    it commits, or that change would never be read (numbers commit out of order; on
    SQLite the writers take turns, so they commit in order)."""

    store = make_app(config_for(postgres_url)).extensions["user_store"]
    store.assignments.save(random_users(random.Random(6), 5, "z"))
    late = Assignment(user_id="late", interests=("surf",), cluster=1, scores={}, model_version="v1")
    found = {}
    with store.engine.connect() as writer:
        transaction = writer.begin()
        write = assignment_writer(store.engine.dialect).write
        write(writer, [late.as_row()], store.room_size)  # numbered, not committed
        reader = threading.Thread(
            target=lambda: found.update(r=store.similar_users.find("z1", 10, False))
        )
        reader.start()
        wait_until_blocked(
            store.engine,
            reader,
            "advisory",  # as it should
            "the index read past a write in flight",
            "the index never waited for the write in flight",
        )
        transaction.commit()
    reader.join(30)
    assert "late" in [other.user_id for _, other in found["r"][1]]


def test_preload_reads_every_users_interest_sets_and_keeps_no_connection(store):
    users = random_users(random.Random(8), 40, "p")
    store.assignments.save(users)
    preload(store)  # as app_cluster does before gunicorn forks its workers
    sets = store.similar_users.interest_sets
    assert sorted(sets.of(None).tolist()) == sorted({interest_mask(u.interests) for u in users})
    assert sorted(sets.of(city_key("Paris")).tolist()) == sorted(
        {interest_mask(u.interests) for u in users if u.city == "Paris"}
    )
    assert store.engine.pool.checkedin() == 0  # no idle connection to fork into workers
