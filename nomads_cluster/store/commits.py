"""Group commit: the assignments of concurrent requests stored in one transaction.

A durable commit waits for the disk (SQLite's fsync, PostgreSQL's WAL flush), and that
wait, not the work, bounds a request that commits on its own. Here each process has
one committer: a request hands it its assignments and waits; the committer writes
whatever has gathered meanwhile in one transaction (one ``executemany`` per table, one
flush) and wakes each waiting request once that transaction is committed. The promise
is the one of a commit per request: a request is answered 200 only after its own
assignments are durable, and 503 (nothing of it stored) when they could not be.

It is written with ``threading``: under gunicorn's gevent worker (monkey-patched) the
committer and the requests are greenlets of one thread; in tests and under a threaded
server they are threads.
"""

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from flask import Flask, current_app

from .assignments import Assignments
from .engine import StoreUnavailable
from .records import Assignment
from .rooms import PlacedRoom

MAX_GROUP_ROWS = 2000  # a batch request alone may bring 1,000


@dataclass(eq=False)
class _Write:
    records: Sequence[Assignment]
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None
    rooms: list[PlacedRoom | None] = field(default_factory=list)


class GroupCommitter:
    """Stores assignments like ``Assignments.save``, sharing transactions between threads."""

    def __init__(self, assignments: Assignments, wait_seconds: float):
        self.assignments = assignments
        # Past this, a write not yet taken by the committer is given up (a 503).
        self.wait_seconds = wait_seconds
        self._pid: int | None = None

    def _start(self) -> None:
        """The committer thread of this process (a forked worker starts its own)."""
        self._pid = os.getpid()
        self._gathered = threading.Condition()
        self._waiting: list[_Write] = []
        threading.Thread(target=self._commit_forever, name="group-commit", daemon=True).start()

    @property
    def waiting(self) -> int:
        """Writes handed to the committer and not taken into a group yet."""
        return len(self._waiting) if self._pid == os.getpid() else 0

    def save(self, records: Sequence[Assignment]) -> list[PlacedRoom | None]:
        """Return once every record is committed, with their rooms; StoreUnavailable
        (none of them stored) when the database fails or does not take them within
        ``wait_seconds``."""
        write = _Write(records)
        if self._pid != os.getpid():
            self._start()
        with self._gathered:
            self._waiting.append(write)
            self._gathered.notify()
        if not write.done.wait(self.wait_seconds):
            with self._gathered:
                if write in self._waiting:  # not taken: it will never be written
                    self._waiting.remove(write)
                    raise StoreUnavailable(
                        f"the database did not take the write within {self.wait_seconds:g} s"
                    )
            write.done.wait()  # taken: its transaction ends within the database timeouts
        # A new exception per request: one object raised in many threads at once would
        # have its traceback rewritten by each of them.
        if isinstance(write.error, StoreUnavailable):
            raise StoreUnavailable(str(write.error)) from write.error
        if write.error is not None:
            raise RuntimeError("storing the assignments failed") from write.error
        return write.rooms

    def _commit_forever(self) -> None:
        while True:
            with self._gathered:
                while not self._waiting:
                    self._gathered.wait()
                group, rows = [], 0
                while self._waiting and (not group or rows < MAX_GROUP_ROWS):
                    write = self._waiting.pop(0)
                    group.append(write)
                    rows += len(write.records)
            self._commit(group)

    def _commit(self, group: list[_Write]) -> None:
        try:
            placed = self.assignments.save([record for write in group for record in write.records])
        except StoreUnavailable as exc:
            for write in group:
                write.error = exc
        except Exception as exc:
            if len(group) == 1:
                group[0].error = exc
            else:
                # Not the database being down: one request's rows may be at fault.
                # Each write on its own, so that only that request fails.
                for write in group:
                    self._commit([write])
                return
        else:
            start = 0
            for write in group:  # the group's rooms, in its writes' order
                write.rooms = placed[start : start + len(write.records)]
                start += len(write.records)
        for write in group:
            write.done.set()


def init_app(app: Flask) -> None:
    """The app's committer, over its store (store.init_app comes first)."""
    assignments = app.extensions["user_store"].assignments
    timeout = float(app.config["DATABASE_TIMEOUT"])
    app.extensions["group_committer"] = GroupCommitter(assignments, timeout)


def get_committer() -> GroupCommitter:
    return current_app.extensions["group_committer"]
