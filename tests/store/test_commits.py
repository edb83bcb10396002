"""Group commit: concurrent writes share a transaction, each is answered only once it is
committed, and a failure reaches exactly the writes it concerns."""

import threading
import time

import pytest

from nomads_cluster.store.commits import GroupCommitter
from nomads_cluster.store.engine import StoreUnavailable
from nomads_cluster.store.records import Assignment


class GatedAssignments:
    """The real store's assignments, whose transactions wait at a gate the test opens;
    it records the users of each transaction and can fail the ones holding a given user."""

    def __init__(self, store):
        self.assignments = store.assignments
        self.transactions: list[list[str]] = []
        self.gate = threading.Event()
        self.in_transaction = threading.Event()
        self.failure: Exception | None = None
        self.poison: str | None = None

    def save(self, records) -> list:
        users = [record.user_id for record in records]
        self.transactions.append(users)
        self.in_transaction.set()
        assert self.gate.wait(30)
        if self.poison in users:
            raise ValueError(f"cannot store {self.poison}")
        if self.failure is not None and len(self.transactions) > 1:
            raise self.failure
        return self.assignments.save(records)


def record(user_id: str) -> Assignment:
    return Assignment(
        user_id=user_id, interests=("surf",), cluster=1, scores={"1": 0.5}, model_version="test"
    )


def save_in_thread(committer: GroupCommitter, user_id: str, outcomes: dict) -> threading.Thread:
    def save() -> None:
        try:
            committer.save([record(user_id)])
            outcomes[user_id] = "stored"
        except Exception as exc:
            outcomes[user_id] = exc

    thread = threading.Thread(target=save)
    thread.start()
    return thread


def wait_for(condition) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.005)


@pytest.fixture
def gated(store):
    return GatedAssignments(store)


def first_transaction_in_flight(gated, committer, outcomes) -> threading.Thread:
    """User "first" taken by the committer and held at the gate."""
    thread = save_in_thread(committer, "first", outcomes)
    assert gated.in_transaction.wait(30)
    return thread


def queue_behind(committer, outcomes, users) -> list[threading.Thread]:
    threads = [save_in_thread(committer, user, outcomes) for user in users]
    wait_for(lambda: committer.waiting == len(users))
    return threads


def test_writes_waiting_meanwhile_share_the_next_transaction(gated, store):
    committer, outcomes = GroupCommitter(gated, wait_seconds=30), {}
    threads = [first_transaction_in_flight(gated, committer, outcomes)]
    users = [f"user-{n}" for n in range(6)]
    threads += queue_behind(committer, outcomes, users)
    assert outcomes == {}  # nobody is answered before their transaction commits
    gated.gate.set()
    for thread in threads:
        thread.join()
    assert gated.transactions[0] == ["first"]
    assert sorted(gated.transactions[1]) == users  # one transaction for all six
    assert outcomes == dict.fromkeys(["first", *users], "stored")
    for user in ["first", *users]:
        assert store.assignments.current(user).cluster == 1


def test_a_write_that_fails_fails_alone(gated, store):
    committer, outcomes = GroupCommitter(gated, wait_seconds=30), {}
    threads = [first_transaction_in_flight(gated, committer, outcomes)]
    gated.poison = "bad"
    threads += queue_behind(committer, outcomes, ["good-1", "bad", "good-2"])
    gated.gate.set()
    for thread in threads:
        thread.join()
    assert isinstance(outcomes["bad"], RuntimeError)
    assert outcomes["good-1"] == outcomes["good-2"] == "stored"
    assert store.assignments.current("bad") is None
    assert (
        store.assignments.current("good-1") is not None
        and store.assignments.current("good-2") is not None
    )


def test_the_database_down_fails_every_write_of_the_transaction(gated, store):
    committer, outcomes = GroupCommitter(gated, wait_seconds=30), {}
    threads = [first_transaction_in_flight(gated, committer, outcomes)]
    gated.failure = StoreUnavailable("the database is unavailable (OperationalError)")
    users = ["down-1", "down-2", "down-3"]
    threads += queue_behind(committer, outcomes, users)
    gated.gate.set()
    for thread in threads:
        thread.join()
    assert outcomes["first"] == "stored"
    for user in users:
        assert isinstance(outcomes[user], StoreUnavailable)
        assert "unavailable" in str(outcomes[user])
        assert store.assignments.current(user) is None


def test_a_write_not_taken_in_time_is_refused_and_never_written(gated, store):
    committer, outcomes = GroupCommitter(gated, wait_seconds=0.2), {}
    first = first_transaction_in_flight(gated, committer, outcomes)
    late = save_in_thread(committer, "late", outcomes)
    late.join()  # gives up while the first transaction is still held at the gate
    assert isinstance(outcomes["late"], StoreUnavailable)
    gated.gate.set()
    first.join()
    assert outcomes["first"] == "stored"
    assert committer.waiting == 0
    assert gated.transactions == [["first"]]
    assert store.assignments.current("late") is None
