"""The users most like a user: exact top k by Jaccard similarity of their interests.

The 26 interests of a user are one integer (``interest_mask``), so every stored user
fits in 16 bytes of numpy arrays, kept in each process, sorted by user number. A query
scans them all (a million users in a few milliseconds: ``docs/performance.md``), which
is exact by construction. The arrays follow the store through its change numbers
(``seq``): before each query the index reads the rows changed since it last looked, and
reloads everything after an erasure. See ``writes.py`` for why those numbers can be
trusted on PostgreSQL.
"""

import threading
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from .database import Database
from .engine import CHANGES_LOCK, advisory_lock
from .records import Assignment
from .tables import assignments, store_state

NO_CITY = -1
LOAD_ROWS = 50_000  # rows fetched at a time


def jaccard(masks: np.ndarray, mask: int) -> np.ndarray:
    """Jaccard similarity of each mask with ``mask`` (0 where both are empty)."""
    shared = np.bitwise_count(masks & mask).astype(np.float64)
    either = np.bitwise_count(masks | mask)
    return np.divide(shared, either, out=np.zeros_like(shared), where=either > 0)


def top_similar(similarity: np.ndarray, eligible: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` most similar eligible entries, most similar first; ties
    in position order."""
    candidates = np.flatnonzero(eligible)
    if len(candidates) > k:
        # Everything at or above the k-th best similarity, then exact order.
        kth = np.partition(similarity[candidates], -k)[-k]
        candidates = candidates[similarity[candidates] >= kth]
    order = np.lexsort((candidates, -similarity[candidates]))
    return candidates[order[:k]]


@dataclass(frozen=True)
class Neighbour:
    user_no: int
    similarity: float
    mask: int


class NeighbourIndex:
    """Every stored user's number, interests and city, as of the last refresh."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._erasures: int | None = None
        self._reset()

    def _reset(self) -> None:
        self.user_nos = np.empty(0, np.int64)
        self.masks = np.empty(0, np.int32)
        self.cities = np.empty(0, np.int32)
        self._city_codes: dict[str, int] = {}
        self._seq = 0

    def city_code(self, key: str | None) -> int:
        if key is None:
            return NO_CITY
        return self._city_codes.setdefault(key, len(self._city_codes))

    def _apply(self, user_nos: np.ndarray, masks: np.ndarray, cities: np.ndarray) -> None:
        """Insert or update users (each at most once: rows of the current assignments)."""
        at = np.searchsorted(self.user_nos, user_nos)
        known = at < len(self.user_nos)
        known[known] = self.user_nos[at[known]] == user_nos[known]
        self.masks[at[known]] = masks[known]
        self.cities[at[known]] = cities[known]
        new = np.argsort(user_nos[~known])
        where = at[~known][new]
        self.user_nos = np.insert(self.user_nos, where, user_nos[~known][new])
        self.masks = np.insert(self.masks, where, masks[~known][new])
        self.cities = np.insert(self.cities, where, cities[~known][new])

    def refresh(self, conn: sa.Connection) -> None:
        """Catch up with the store: the rows changed since the last refresh, or all of
        them after an erasure (which leaves nothing to read)."""
        with self._lock:
            committed, erasures = _committed_changes(conn)
            if erasures != self._erasures:
                self._reset()
                self._erasures = erasures
            query = sa.select(
                assignments.c.user_no, assignments.c.interest_mask, assignments.c.city_key
            ).where(assignments.c.seq > self._seq, assignments.c.seq <= committed)
            parts = []  # streamed: a first load reads every user
            for rows in conn.execution_options(yield_per=LOAD_ROWS).execute(query).partitions():
                parts.append(
                    (
                        np.fromiter((row[0] for row in rows), np.int64, len(rows)),
                        np.fromiter((row[1] for row in rows), np.int32, len(rows)),
                        np.fromiter((self.city_code(row[2]) for row in rows), np.int32, len(rows)),
                    )
                )
            if parts:
                self._apply(*(np.concatenate(column) for column in zip(*parts, strict=True)))
            self._seq = committed

    def similar(self, user_no: int, mask: int, city_key: str | None, k: int) -> list[Neighbour]:
        """The ``k`` users most like this one (never themself), most similar first; ties
        by user number (who was stored first). ``city_key``: only users of that city."""
        with self._lock:
            eligible = self.user_nos != user_no
            if city_key is not None:
                if city_key not in self._city_codes:  # nobody stored in that city
                    return []
                eligible &= self.cities == self._city_codes[city_key]
            similarity = jaccard(self.masks, mask)
            found = top_similar(similarity, eligible, k)
            return [
                Neighbour(int(self.user_nos[i]), float(similarity[i]), int(self.masks[i]))
                for i in found
            ]


def _committed_changes(conn: sa.Connection) -> tuple[int, int]:
    """The change number up to which every change is committed, and the erasures.

    On PostgreSQL, taking CHANGES_LOCK exclusive waits for the writers in flight (each
    holds it shared until it commits): no number below the largest is still to come.
    """
    largest = sa.select(sa.func.coalesce(sa.func.max(assignments.c.seq), 0)).scalar_subquery()
    query = sa.select(largest, store_state.c.erasures).where(store_state.c.id == 1)
    with conn.begin():
        advisory_lock(conn, CHANGES_LOCK)
        committed, erasures = conn.execute(query).one()
    return committed, erasures


class SimilarUsers:
    """``find``: a stored user and the users most like them, with their assignments."""

    def __init__(self, database: Database):
        self.database = database
        self._index = NeighbourIndex()

    def find(
        self, user_id: str, k: int, same_city: bool
    ) -> tuple[Assignment, list[tuple[Neighbour, Assignment]]] | None:
        """The user and the ``k`` stored users most like them, with their current
        assignments; ``same_city``: of the user's city (none for a user without one).
        None when the user is not stored."""
        me = sa.select(assignments).where(assignments.c.user_id == user_id)

        def work(conn: sa.Connection) -> tuple[sa.Row, list[Neighbour], list[sa.Row]] | None:
            self._index.refresh(conn)  # first: it ends its own transaction
            row = conn.execute(me).first()
            if row is None:
                return None
            if same_city and row.city_key is None:  # nobody shares a city they have not
                return row, [], []
            city = row.city_key if same_city else None
            found = self._index.similar(row.user_no, row.interest_mask, city, k)
            numbers = [neighbour.user_no for neighbour in found]
            rows = conn.execute(
                sa.select(assignments).where(assignments.c.user_no.in_(numbers))
            ).all()
            return row, found, rows

        result = self.database.run(work, write=False)
        if result is None:
            return None
        row, found, rows = result
        by_number = {r.user_no: Assignment.from_row(r) for r in rows}
        # A user erased between the index's refresh and this read is left out.
        neighbours = [(n, by_number[n.user_no]) for n in found if n.user_no in by_number]
        return Assignment.from_row(row), neighbours
