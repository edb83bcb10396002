"""The change feed's events, written with the changes that cause them: placements,
moves, erasures; none for a re-post that changes nothing; read in commit order, even
while PostgreSQL writers commit out of id order."""

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from nomads_cluster.store.events import CursorTooOld, prune_events, read_events
from nomads_cluster.store.records import Assignment
from nomads_cluster.store.tables import user_events
from nomads_cluster.store.writes import assignment_writer


def record(user_id: str, cluster: int = 1, city: str | None = None, **fields) -> Assignment:
    return Assignment(
        user_id=user_id,
        interests=("surf",),
        cluster=cluster,
        scores={},
        model_version="v1",
        city=city,
        **fields,
    )


def feed(store, after: int = 0) -> list[dict]:
    events = store.run(lambda conn: read_events(conn, after, 1000), write=False)
    return [event.as_json() for event in events]


def summary(events: list[dict]) -> list[tuple]:
    return [(e["type"], e["user_id"], e["segment"], e["room"]) for e in events]


def test_placements_moves_and_erasures_each_make_one_event(store):
    store.assignments.save([record("a"), record("b", city="Madrid")])
    store.assignments.save([record("a")])  # the same again: no event
    store.assignments.save([record("a", cluster=2)])  # a new segment
    store.assignments.save([record("a", cluster=2, city="Oslo")])  # a first city: placed in a room
    store.assignments.save([record("b", cluster=3, city="Madrid")])  # another segment, another room
    store.assignments.erase("b")
    events = feed(store)
    assert summary(events) == [
        ("user.placed", "a", 1, None),
        ("user.placed", "b", 1, "madrid-1"),
        ("user.moved", "a", 2, None),
        ("user.placed", "a", 2, "oslo-2"),
        ("user.moved", "b", 3, "madrid-3"),
        ("user.erased", "b", None, None),
    ]
    assert [e["id"] for e in events] == sorted({e["id"] for e in events})
    moved = events[4]
    assert (moved["previous_segment"], moved["previous_room"]) == (1, "madrid-1")
    assert (events[5]["previous_segment"], events[5]["previous_room"]) == (3, "madrid-3")
    assert events[5]["source"] == "erasure" and events[0]["source"] == "api"
    assert all("interests" not in e for e in events)


def test_two_changes_of_one_user_in_one_write_are_two_events(store):
    store.assignments.save([record("c"), record("c", cluster=4), record("c", cluster=4)])
    assert summary(feed(store)) == [("user.placed", "c", 1, None), ("user.moved", "c", 4, None)]


def test_reassign_writes_a_move_for_each_user_it_changes(store):
    store.assignments.save([record("r1", city="Lisboa"), record("r2")])
    read = {
        r.user_id: r for r in (store.assignments.current("r1"), store.assignments.current("r2"))
    }
    after = feed(store)[-1]["id"]
    moved = replace(read["r1"], cluster=2, model_version="v2", source="reassign", room_id=None)
    kept = replace(read["r2"], model_version="v2", source="reassign")
    store.lifecycle.replace_unchanged([(read["r1"], moved), (read["r2"], kept)])
    events = feed(store, after)
    assert summary(events) == [("user.moved", "r1", 2, "lisboa-2")]
    assert events[0]["source"] == "reassign" and events[0]["model_version"] == "v2"
    assert events[0]["previous_room"] == "lisboa-1"


def test_a_failed_write_leaves_no_event(store):
    """The database refuses the second user (a trigger here): nothing of the write
    stays, its events included."""
    refusal = "SELECT RAISE(ABORT, 'refused')"
    with store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'refused'; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON assignments FOR EACH ROW"
                " WHEN (NEW.user_id = 'bad') EXECUTE FUNCTION refuse()"
            )
        else:
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON assignments"
                f" WHEN NEW.user_id = 'bad' BEGIN {refusal}; END"
            )
    with pytest.raises(sa.exc.DBAPIError, match="refused"):
        store.assignments.save([record("ok"), record("bad")])
    assert feed(store) == [] and store.assignments.current("ok") is None


def test_pruned_events_make_an_old_cursor_too_old(store):
    store.assignments.save([record("p1"), record("p2")])
    first, second = feed(store)
    with store.engine.begin() as conn:
        old = datetime.now(UTC) - timedelta(days=8)
        conn.execute(
            user_events.update().where(user_events.c.id == first["id"]).values(occurred_at=old)
        )
    assert store.run(lambda conn: prune_events(conn, timedelta(days=7)), write=True) == 1
    with pytest.raises(CursorTooOld, match=f"the events up to {first['id']} were pruned"):
        feed(store, 0)
    assert [e["id"] for e in feed(store, first["id"])] == [second["id"]]


def test_a_reader_waits_for_a_writer_in_flight_and_skips_no_id(store, database_url):
    """A sequence's numbers show in commit order only by chance: the first writer takes
    its id, the second takes the next and commits first. A reader then must not return
    the second alone (and move past the first for ever)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's writers take turns: ids are always committed in order")

    write = assignment_writer(store.engine.dialect).write
    held = store.engine.connect()
    transaction = held.begin()
    write(held, [record("slow").as_row()], store.room_size)  # id N, not committed
    store.assignments.save([record("fast")])  # id N + 1, committed
    read: list[list[dict]] = []
    reader = threading.Thread(target=lambda: read.append(feed(store)))
    reader.start()
    reader.join(timeout=0.5)
    assert reader.is_alive()  # it waits for the writer in flight...
    transaction.commit()
    held.close()
    reader.join(timeout=10)
    assert [e["user_id"] for e in read[0]] == ["slow", "fast"]  # ...and so misses none


def test_concurrent_writers_are_followed_without_a_gap_or_a_repeat(store, database_url):
    seen: list[int] = []
    done = threading.Event()

    def follow() -> None:
        after = 0
        while True:
            finished = done.is_set()
            found = feed(store, after)
            seen.extend(e["id"] for e in found)
            if found:
                after = found[-1]["id"]
            elif finished:
                return

    def sign_up(writer: int) -> None:
        for i in range(40):
            city = "Madrid" if i % 2 else None
            store.assignments.save([record(f"w{writer}-{i}", cluster=1 + i % 4, city=city)])

    reader = threading.Thread(target=follow)
    reader.start()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(sign_up, range(4)))
    done.set()
    reader.join(timeout=60)
    with store.engine.connect() as conn:
        stored = conn.execute(sa.select(user_events.c.id).order_by(user_events.c.id)).scalars()
        assert seen == list(stored)
    assert len(seen) == 160


def test_without_any_room_a_move_is_a_move_and_a_repost_nothing(store):
    """No room opened yet (nothing in the rooms table): the write's reading of the
    users' places must still see them as they were."""
    store.assignments.save([record("n1"), record("n2")])
    store.assignments.save([record("n1"), record("n2", cluster=3)])
    assert summary(feed(store)) == [
        ("user.placed", "n1", 1, None),
        ("user.placed", "n2", 1, None),
        ("user.moved", "n2", 3, None),
    ]
