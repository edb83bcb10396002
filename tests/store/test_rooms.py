"""Chat rooms in the store: filled in order up to the room size, followed by each user
through new segments, cities and erasure, race-free across processes, and stable
across a retrain with --previous."""

import multiprocessing
import random
import threading
from collections import Counter

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa
from helpers.pg_locks import wait_until_blocked

from nomads_cluster.cities import city_key, room_id
from nomads_cluster.segmentation.interests import INTEREST_KEYS
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, load_model
from nomads_cluster.segmentation.survey import Survey, read_survey
from nomads_cluster.segmentation.training import train
from nomads_cluster.store import database, writes
from nomads_cluster.store.engine import StoreUnavailable, create_store_engine
from nomads_cluster.store.reassign import reassign
from nomads_cluster.store.records import Assignment
from nomads_cluster.store.rooms import place_in_rooms
from nomads_cluster.store.tables import assignments, rooms
from nomads_cluster.store.users import UserStore
from nomads_cluster.store.writes import assignment_writer


def user(user_id, city="Madrid", cluster=2, interests=("surf",), version="v1") -> Assignment:
    return Assignment(
        user_id=user_id,
        interests=interests,
        cluster=cluster,
        scores={str(cluster): 0.5},
        model_version=version,
        city=city,
    )


@pytest.fixture
def small_rooms(store) -> UserStore:
    """The test's store, with rooms of 3."""
    return UserStore(store.engine, room_size=3)


def members_by_room(store: UserStore) -> dict[str, list[str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(assignments.c.room_id, assignments.c.user_id)
            .where(assignments.c.room_id.is_not(None))
            .order_by(assignments.c.user_id)
        ).all()
    found: dict[str, list[str]] = {}
    for room, user_id in rows:
        found.setdefault(room, []).append(user_id)
    return found


def test_a_full_room_sends_the_next_member_to_the_next_room(small_rooms):
    placed = small_rooms.assignments.save([user(i) for i in range(7)])
    key = city_key("Madrid")
    expected = [room_id(key, 2, 1)] * 3 + [room_id(key, 2, 2)] * 3 + [room_id(key, 2, 3)]
    assert (
        [room.id for room in placed]
        == expected
        == ["madrid-2"] * 3 + ["madrid-2-2"] * 3 + ["madrid-2-3"]
    )
    assert {r.id: r.members for r in small_rooms.rooms.page(key, None, 10)} == {
        "madrid-2": 3,
        "madrid-2-2": 3,
        "madrid-2-3": 1,
    }
    assert small_rooms.assignments.current("6").room_id == "madrid-2-3"


def test_spellings_of_a_city_share_rooms_named_as_their_first_member_wrote(small_rooms):
    placed = small_rooms.assignments.save([user(1, "Málaga"), user(2, "MALAGA"), user(3, "malaga")])
    assert {(room.id, room.city) for room in placed} == {("malaga-2", "Málaga")}
    assert small_rooms.assignments.current("2").city == "MALAGA"  # each user's own spelling is kept


def test_a_user_keeps_their_room_until_their_segment_or_city_changes(small_rooms):
    small_rooms.assignments.save([user(i) for i in range(4)])  # madrid-2: 0, 1, 2; madrid-2-2: 3
    small_rooms.assignments.save([user(0, interests=("sushi",))])  # same city and segment: stays
    assert small_rooms.assignments.current("0").room_id == "madrid-2"
    (moved,) = small_rooms.assignments.save([user(0, cluster=3)])
    assert moved.id == "madrid-3"
    (left,) = small_rooms.assignments.save([user(1, city=None)])
    assert left is None and small_rooms.assignments.current("1").room_id is None
    # Two places are free in the first room: the next newcomers take them first.
    placed = small_rooms.assignments.save([user(10), user(11), user(12)])
    assert [room.id for room in placed] == ["madrid-2", "madrid-2", "madrid-2-2"]
    assert members_by_room(small_rooms) == {
        "madrid-2": ["10", "11", "2"],
        "madrid-2-2": ["12", "3"],
        "madrid-3": ["0"],
    }


def test_several_rows_of_one_user_in_a_group_leave_them_in_one_room(small_rooms):
    small_rooms.assignments.save(
        [user(1), user(1, cluster=3), user(1, city="Paris"), user(1, cluster=4)]
    )
    assert members_by_room(small_rooms) == {"madrid-4": ["1"]}
    assert {r.id: r.members for r in small_rooms.rooms.page(None, None, 10)} == {
        "madrid-2": 0,
        "madrid-3": 0,
        "paris-2": 0,
        "madrid-4": 1,
    }


def test_erasure_leaves_no_trace_in_rooms(small_rooms):
    small_rooms.assignments.save([user(i) for i in range(4)])
    assert small_rooms.assignments.erase("1")
    assert members_by_room(small_rooms) == {"madrid-2": ["0", "2"], "madrid-2-2": ["3"]}
    assert [m.user_id for m in small_rooms.rooms.members("madrid-2", None, 10)] == [0, 2]
    assert small_rooms.rooms.get("madrid-2").members == 2


def stored_counts(store: UserStore) -> tuple[dict[str, int], dict[str, int]]:
    """Each room's kept count of members, and its members counted."""
    kept = {r.id: r.members for r in store.rooms.page(None, None, 10_000)}
    counted = {room: len(users) for room, users in members_by_room(store).items()}
    return kept, {room: counted.get(room, 0) for room in kept}


class ReferenceRooms:
    """The rooms' rule, followed with every member known: the store must agree while
    it reads only the rooms with a free place."""

    def __init__(self, room_size: int):
        self.room_size = room_size
        self.members: dict[str, set[str]] = {}  # room id -> user ids
        self.order: dict[tuple[str, int], list[str]] = {}  # group -> its rooms' ids
        self.room_of: dict[str, str | None] = {}

    def save(self, record: Assignment) -> str | None:
        uid, current = str(record.user_id), self.room_of.get(str(record.user_id))
        group = None if record.city is None else (city_key(record.city), record.cluster)
        if current is not None and group is not None and current in self.order.get(group, []):
            return current
        if current is not None:
            self.members[current].discard(uid)
        room = None
        if group is not None:
            opened = self.order.setdefault(group, [])
            free = [r for r in opened if len(self.members[r]) < self.room_size]
            room = free[0] if free else room_id(*group, len(opened) + 1)
            if not free:
                opened.append(room)
                self.members[room] = set()
            self.members[room].add(uid)
        self.room_of[uid] = room
        return room

    def erase(self, user_id: str) -> None:
        room = self.room_of.pop(user_id, None)
        if room is not None:
            self.members[room].discard(user_id)


def assert_saved_as_the_rule_says(store: UserStore, reference: ReferenceRooms, group) -> None:
    placed = store.assignments.save(group)
    assert [None if room is None else room.id for room in placed] == [
        reference.save(record) for record in group
    ]


def assert_members_as_the_rule_says(store: UserStore, reference: ReferenceRooms) -> None:
    assert {room: sorted(users) for room, users in members_by_room(store).items()} == {
        room: sorted(users) for room, users in reference.members.items() if users
    }


def test_rooms_follow_their_rule_and_keep_their_counts_through_any_writes(small_rooms):
    """Random groups of sign-ups, moves, users leaving without a city, repeated users in
    one group, and erasures: every room as the rule gives, and its count true."""
    rng = random.Random(11)
    reference = ReferenceRooms(room_size=3)
    for _ in range(60):
        if rng.random() < 0.15 and reference.room_of:
            erased = rng.choice(sorted(reference.room_of))
            assert small_rooms.assignments.erase(erased)
            reference.erase(erased)
            continue
        group = [
            user(
                f"u{rng.randrange(30)}",
                city=rng.choice(["Madrid", "Paris", "Lisboa", None]),
                cluster=rng.choice([1, 2]),
            )
            for _ in range(rng.randint(1, 5))
        ]
        assert_saved_as_the_rule_says(small_rooms, reference, group)
        kept, counted = stored_counts(small_rooms)
        assert kept == counted
    assert_members_as_the_rule_says(small_rooms, reference)


@pytest.mark.parametrize("rows_placed_in_the_statement", [10_000, 100])
def test_one_write_of_many_users_places_them_as_writes_of_one_each_would(
    small_rooms, monkeypatch, rows_placed_in_the_statement
):
    """A bulk write (a chunk of ``assign --store``, a batch): users already in rooms,
    new ones, repeated ones, some leaving for another city or none, all in one write.
    It opens and fills rooms in the same order as one write per user would, placed
    inside the statement or first in Python (PostgreSQL, by the write's size)."""
    monkeypatch.setattr(writes, "PLACED_IN_ONE_STATEMENT_ROWS", rows_placed_in_the_statement)
    rng = random.Random(5)
    reference = ReferenceRooms(room_size=3)
    cities = ["Madrid", "Paris", "Lisboa", "Oslo", None]

    def someone() -> Assignment:
        return user(f"u{rng.randrange(120)}", rng.choice(cities), rng.choice([1, 2, 3]))

    for _ in range(2):
        group = [someone() for _ in range(300)]
        assert_saved_as_the_rule_says(small_rooms, reference, group)
    kept, counted = stored_counts(small_rooms)
    assert kept == counted
    assert_members_as_the_rule_says(small_rooms, reference)


def test_members_come_a_page_at_a_time_in_user_id_order(store):
    store.assignments.save([user(f"u{i:02d}") for i in range(25)])
    pages, after = [], None
    while page := store.rooms.members("madrid-2", after, 10):
        pages.append([m.user_id for m in page])
        after = str(page[-1].user_id)
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [u for page in pages for u in page] == [f"u{i:02d}" for i in range(25)]


ROOM_SIZE = 5
PROCESSES = 4


def sign_up(database_url: str, seed: int) -> None:
    """One worker's sign-ups: groups of random users of two cities and two segments,
    some of them users other workers sign up too, some moving or leaving."""
    engine = create_store_engine(database_url, timeout=30)
    store = UserStore(engine, timeout=30, room_size=ROOM_SIZE)
    rng = random.Random(seed)
    for _ in range(15):
        store.assignments.save(
            [
                user(
                    rng.choice([f"shared-{rng.randrange(20)}", f"w{seed}-{rng.randrange(40)}"]),
                    city=rng.choice(["Madrid", "Paris", None]),
                    cluster=rng.choice([1, 2]),
                )
                for _ in range(rng.randint(1, 6))
            ]
        )
    engine.dispose()


def test_concurrent_sign_ups_from_several_processes_never_overfill_a_room(store, database_url):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=sign_up, args=(database_url, s)) for s in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    with store.engine.connect() as conn:
        users = conn.execute(sa.select(assignments)).all()
        opened = {row.id: row for row in conn.execute(sa.select(rooms))}
    members = Counter(row.room_id for row in users if row.room_id is not None)
    assert members and max(members.values()) <= ROOM_SIZE
    assert {id_: room.members for id_, room in opened.items()} == {
        id_: members.get(id_, 0) for id_ in opened
    }  # the counts the triggers kept, under concurrent writes
    for row in users:  # one room each, of their city and segment; none without a city
        if row.city is None:
            assert row.room_id is None
        else:
            room = opened[row.room_id]
            assert (room.city_key, room.segment) == (city_key(row.city), row.cluster)
    for (key, segment), count in Counter((r.city_key, r.segment) for r in opened.values()).items():
        ordinals = sorted(
            r.ordinal for r in opened.values() if (r.city_key, r.segment) == (key, segment)
        )
        assert ordinals == list(range(1, count + 1))


def test_reassign_moves_users_whose_segment_changed_to_a_room_of_it(store):
    model = load_model(DEFAULT_MODEL_DIR)
    rng = np.random.default_rng(3)
    old = [
        user(i, interests=tuple(k for k in INTEREST_KEYS if rng.random() < 0.4), cluster=1)
        for i in range(40)
    ]
    store.assignments.save(old)
    reassign(store, model)
    for assigned in old:
        now = store.assignments.current(str(assigned.user_id))
        assert now.room_id == store.rooms.get(now.room_id).id
        assert now.room_id.startswith(f"madrid-{now.cluster}")
    counts = {r.id: r.members for r in store.rooms.page(None, None, 10)}
    assert sum(counts.values()) == 40 and counts.get("madrid-1", 0) < 40


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_room_ids_survive_a_retrain_with_previous(store, survey_path, tmp_path):
    committed = load_model(DEFAULT_MODEL_DIR)
    survey = read_survey(survey_path)
    segments, scores = committed.assign_users(survey.features)
    cities = ["Madrid", "Lisboa", "Berlin"]
    store.assignments.save(
        [
            Assignment(
                user_id=i,
                interests=tuple(k for k, v in zip(INTEREST_KEYS, row, strict=True) if v),
                cluster=int(segment),
                scores=committed.scores_by_number(user_scores),
                model_version=committed.version,
                city=cities[i % 3],
            )
            for i, (row, segment, user_scores) in enumerate(
                zip(survey.features, segments, scores.tolist(), strict=True)
            )
        ]
    )
    before = {i: store.assignments.current(str(i)) for i in range(survey.n_rows)}
    rows = np.random.default_rng(5).integers(0, survey.n_rows, survey.n_rows)
    resampled = Survey(features=survey.features[rows], sha256="bootstrap", source="bootstrap")
    train(resampled, tmp_path, previous=committed)
    report = reassign(store, load_model(tmp_path))
    kept = 0
    for i, old in before.items():
        now = store.assignments.current(str(i))
        assert now.room_id == room_id(city_key(old.city), now.cluster, 1)  # rooms of 250
        if now.cluster == old.cluster:
            kept += 1
            assert now.room_id == old.room_id
    assert kept == report.reassigned - report.changed
    assert kept > survey.n_rows / 2  # the numbers followed the segments' meaning


def saving_in_background(
    store: UserStore, records: list[Assignment]
) -> tuple[threading.Thread, list[Exception]]:
    """A started thread that saves ``records``, and the list its failure goes to."""
    failed: list[Exception] = []

    def save() -> None:
        try:
            store.assignments.save(records)
        except Exception as exc:  # reported by the test's assertion
            failed.append(exc)

    thread = threading.Thread(target=save)
    thread.start()
    return thread, failed


def test_on_postgresql_placements_wait_only_for_their_own_city_and_segment(postgres_store):
    """A placement in flight holds its group's lock until it commits: a newcomer of
    another group is placed meanwhile, one of its group waits for it (and then counts
    its member)."""
    store = postgres_store
    with store.engine.connect() as holder:
        transaction = holder.begin()
        rows = [user("first").as_row()]  # Madrid, segment 2
        write = assignment_writer(store.engine.dialect).write
        write(holder, rows, store.room_size)  # placed, not committed
        other_group = threading.Thread(
            target=store.assignments.save, args=([user("paris", "Paris")],)
        )
        other_group.start()
        other_group.join(30)
        assert not other_group.is_alive(), "another city waited for the placement"
        same_group = threading.Thread(target=store.assignments.save, args=([user("second")],))
        same_group.start()
        wait_until_blocked(
            store.engine,
            same_group,
            "advisory",
            "placed past a placement in flight",
            "the placement never waited for the one in flight",
        )
        transaction.commit()
    same_group.join(30)
    assert store.rooms.get("madrid-2").members == 2
    assert [store.assignments.current(u).room_id for u in ("first", "second", "paris")] == [
        "madrid-2",
        "madrid-2",
        "paris-2",
    ]


@pytest.mark.parametrize(
    "in_flight",
    [
        user("leaves", None),  # takes someone out of the room: holds the room's row
        user("joins"),  # a placement into the same city and segment: holds the group's lock
    ],
    ids=["someone-leaving-their-room", "someone-joining-their-group"],
)
def test_on_postgresql_users_who_keep_their_rooms_wait_for_no_write_in_their_room(
    postgres_store, in_flight
):
    """A write whose users all keep their city and segment changes no room's count: it
    takes no lock of their rooms or of their group, and goes through while another
    write that changes them is in flight."""
    store = postgres_store
    store.assignments.save([user("leaves"), user("stays")])  # both in madrid-2
    with store.engine.connect() as holder:
        transaction = holder.begin()
        write = assignment_writer(store.engine.dialect).write
        write(holder, [in_flight.as_row()], store.room_size)  # not committed
        stays, failed = saving_in_background(store, [user("stays", interests=("sunsets",))])
        stays.join(10)
        assert not stays.is_alive(), "a user who kept their room waited for another write"
        transaction.commit()
    assert failed == []
    kept = store.assignments.current("stays")
    assert (kept.interests, kept.room_id) == (("sunsets",), "madrid-2")
    assert store.rooms.get("madrid-2").members == len(members_by_room(store)["madrid-2"])


def test_on_postgresql_writes_taking_users_out_of_rooms_in_opposite_orders_never_deadlock(
    postgres_store, monkeypatch
):
    """Two writes that take users out of the same two rooms in opposite orders: each
    locks the rooms whose counts it changes, in the order of their ids, before writing,
    so one waits for the other instead of deadlocking (which PostgreSQL would end by
    failing one of them after a second). Both stored, the counts true, no attempt
    failed (the store's retries are off)."""
    monkeypatch.setattr(database, "WRITE_ATTEMPTS", 1)
    store = postgres_store
    store.assignments.save([user("a"), user("d"), user("b", "Paris"), user("c", "Paris")])
    with store.engine.connect() as holder:
        transaction = holder.begin()
        write = assignment_writer(store.engine.dialect).write
        write(holder, [user("a", None).as_row()], store.room_size)  # holds madrid-2's count
        # c leaves paris-2, then d leaves madrid-2
        other, failed = saving_in_background(store, [user("c", None), user("d", None)])
        wait_until_blocked(
            store.engine,
            other,
            None,
            "the other write did not wait",
            "the other write never waited",
        )
        write(holder, [user("b", None).as_row()], store.room_size)  # paris-2: still free
        transaction.commit()
    other.join(30)
    assert failed == []
    assert {r.id: r.members for r in store.rooms.page(None, None, 10)} == {
        "madrid-2": 0,
        "paris-2": 0,
    }
    assert members_by_room(store) == {}


def test_on_postgresql_one_user_placed_and_unplaced_at_once_never_deadlocks(
    postgres_store, monkeypatch
):
    """Two writes of one user in flight at once: one places them in a room of another
    city, one stores them without a city. Every write locks its users' rows, then the
    rooms whose counts it changes, each in order, so the second waits for the first
    instead of deadlocking (locking the user's old room first would deadlock, the first
    holding the user and waiting for that room). Both stored, the last one current, the
    counts true, no attempt failed (the store's retries are off)."""
    monkeypatch.setattr(database, "WRITE_ATTEMPTS", 1)
    store = postgres_store
    store.assignments.save([user("u")])  # in madrid-2
    with store.engine.connect() as holder:
        transaction = holder.begin()
        rows = [user("u", "Paris").as_row()]
        # Placed in Python first, as a reassign does: u's row held; paris-2 opened.
        place_in_rooms(holder, rows, store.room_size)
        other, failed = saving_in_background(store, [user("u", None)])
        wait_until_blocked(
            store.engine,
            other,
            None,
            "the other write did not wait",
            "the other write never waited",
        )
        write = assignment_writer(store.engine.dialect).write
        write(holder, rows, store.room_size)  # takes u out of madrid-2
        transaction.commit()
    other.join(30)
    assert failed == []
    assert (
        store.assignments.current("u").room_id is None
        and store.assignments.current("u").city is None
    )
    assert {r.id: r.members for r in store.rooms.page(None, None, 10)} == {
        "madrid-2": 0,
        "paris-2": 0,
    }
    assert [entry.city for entry in store.assignments.history("u", 10)] == [
        None,
        "Paris",
        "Madrid",
    ]


def test_a_write_failed_by_a_deadlock_is_run_again_and_other_failures_are_not(store):
    """A write that PostgreSQL rolls back whole to end a deadlock (none is known to
    remain: the writes lock in one order) is run again; other failures are not."""

    class Deadlock(psycopg.errors.DeadlockDetected):
        sqlstate = "40P01"

    attempts = []

    def deadlocked_once(conn):
        attempts.append(conn)
        if len(attempts) == 1:
            raise sa.exc.OperationalError("UPDATE rooms ...", {}, Deadlock("deadlock detected"))
        return "written"

    assert store.run(deadlocked_once, write=True) == "written"
    assert len(attempts) == 2

    def unreachable(conn):
        attempts.append(conn)
        raise sa.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("gone"))

    attempts.clear()
    with pytest.raises(StoreUnavailable):
        store.run(unreachable, write=True)
    assert len(attempts) == 1
