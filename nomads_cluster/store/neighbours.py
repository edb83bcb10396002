"""The users most like a user: exact top k by Jaccard similarity of their interests.

The 26 interests of a user are one integer (``interest_mask``). Users share interest
sets far more than they differ (10 million users hold about 2 million distinct sets),
and every user of one set is equally similar to anyone, so each process keeps only the
sets (``InterestSets``: those of all users, and those of each city, 4 bytes a set), not
the users. A query ranks the sets by their similarity with the user's and, best level
first, asks the database for the first k users (by user number: who was stored first)
of each set of the level (``MaskProbe``, an index on ``interest_mask, user_no``), until
k users are found. Exact: a set's later users cannot beat its first k, and a level's
users all beat the next level's.

The sets follow the store through its change numbers (``seq``): before each query the
sets take in those of the rows changed since they last looked. A user gets a new number
only when their interest set or city changes (a re-scoring keeps it). A set whose users
all left or changed stays, and finds nobody in the database: an erasure needs nothing.
See ``writes.py`` for why those numbers can be trusted on PostgreSQL.
"""

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from .database import Database
from .engine import CHANGES_LOCK, advisory_lock
from .records import Assignment
from .tables import assignments

INTERESTS = 26
COMPACT_AT = 50_000  # sets added since the last merge, past which they are merged
CATCH_UP_ROWS = 50_000  # changed rows read in one statement by a refresh
# Interest sets asked of the database at least at a time (whole levels), and at most
# in one statement.
PROBE_AT_LEAST = 32
SETS_PER_STATEMENT = 256  # SQLite: subqueries of one statement (its limit is 500)
# SQLite: a statement's sets padded to a power of two with a mask nobody holds, so that
# its statements come in a few shapes: sqlite3 keeps each connection's last 128
# statements compiled, and one of a few hundred subqueries takes hundreds of kilobytes.
NO_SET = -1
LEVELS_AT_ONCE = 65_536  # sets ranked in one numpy pass


def _level_table() -> tuple[np.ndarray, np.ndarray]:
    """Every Jaccard similarity two sets of 26 interests can have, best first, and the
    level (index into it) of each (shared, either) pair of counts, as ``shared * 27 +
    either``: the ranking of every set in one table lookup."""
    pairs = [(s, e) for e in range(INTERESTS + 1) for s in range(e + 1)]
    values = sorted({s / e if e else 0.0 for s, e in pairs}, reverse=True)
    level = np.zeros((INTERESTS + 1) * (INTERESTS + 1), np.uint16)
    for s, e in pairs:
        level[s * (INTERESTS + 1) + e] = values.index(s / e if e else 0.0)
    return np.array(values), level


SIMILARITIES, LEVELS = _level_table()


def similarity_levels(masks: np.ndarray, mask: int) -> np.ndarray:
    """The level of each mask's similarity with ``mask`` (0: the best, SIMILARITIES).
    A slice at a time: small temporaries, which a worker's memory does not keep."""
    levels = np.empty(len(masks), np.uint16)
    for start in range(0, len(masks), LEVELS_AT_ONCE):
        part = masks[start : start + LEVELS_AT_ONCE]
        shared = np.bitwise_count(part & mask).astype(np.uint16)
        either = np.bitwise_count(part | mask)
        levels[start : start + LEVELS_AT_ONCE] = LEVELS[shared * (INTERESTS + 1) + either]
    return levels


def ranked_batches(masks: np.ndarray, mask: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The masks that share an interest with ``mask``, by decreasing similarity, in
    batches of whole levels (each at least PROBE_AT_LEAST masks, but the last):
    (masks, their levels)."""
    levels = similarity_levels(masks, mask)
    sizes = np.bincount(levels, minlength=len(SIMILARITIES))
    sizes[-1] = 0  # similarity 0: the database finds them by a condition (MaskProbe)
    wanted = np.zeros(len(SIMILARITIES), bool)  # the levels of the next batch
    count = 0
    for level in np.flatnonzero(sizes):
        wanted[level] = True
        count += sizes[level]
        if count >= PROBE_AT_LEAST:
            chosen = wanted[levels]
            yield masks[chosen], levels[chosen]
            wanted[:], count = False, 0
    if count:
        chosen = wanted[levels]
        yield masks[chosen], levels[chosen]


class MaskSet:
    """Distinct masks: a sorted array, and those added since it was last merged."""

    def __init__(self, masks: np.ndarray | None = None, compact_at: int = COMPACT_AT):
        self.merged = np.unique(masks) if masks is not None else np.empty(0, np.int32)
        self.added: set[int] = set()
        self.compact_at = compact_at
        self._all = self.merged

    def add(self, masks: np.ndarray) -> None:
        at = np.searchsorted(self.merged, masks)
        known = at < len(self.merged)
        known[known] = self.merged[at[known]] == masks[known]
        new = set(masks[~known].tolist()) - self.added
        if not new:
            return
        self.added |= new
        if len(self.added) > self.compact_at:
            self.merged = np.union1d(self.merged, np.fromiter(self.added, np.int32))
            self.added = set()
            self._all = self.merged
        else:
            self._all = np.concatenate([self.merged, np.fromiter(self.added, np.int32)])

    def array(self) -> np.ndarray:
        """Every mask once, in no particular order."""
        return self._all

    @property
    def nbytes(self) -> int:
        """The arrays' bytes (the merged masks, and their copy with those added)."""
        return self.merged.nbytes + (0 if self._all is self.merged else self._all.nbytes)


class InterestSets:
    """The interest sets of the stored users, of all and of each city, as of the last
    refresh (with sets no longer anyone's: they find nobody)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.everyone = MaskSet()
        self.by_city: dict[str, MaskSet] = {}
        self._seq = 0

    @property
    def nbytes(self) -> int:
        return self.everyone.nbytes + sum(s.nbytes for s in self.by_city.values())

    def refresh(self, conn: sa.Connection) -> None:
        """Take in the sets of the rows changed since the last refresh (the first one:
        of every row)."""
        with self._lock:
            committed = _committed_changes(conn)
            if self._seq == 0:
                self._load(conn, assignments.c.seq <= committed)
                self._seq = committed
            # CATCH_UP_ROWS at a time: a statement each, which the request path's
            # statement timeout bounds however many users changed their sets.
            columns = (assignments.c.seq, assignments.c.city_key, assignments.c.interest_mask)
            while self._seq < committed:
                changed = (assignments.c.seq > self._seq) & (assignments.c.seq <= committed)
                query = sa.select(*columns).where(changed).order_by(assignments.c.seq)
                rows = conn.execute(query.limit(CATCH_UP_ROWS)).all()
                self._add([(key, mask) for _, key, mask in rows])
                self._seq = rows[-1].seq if len(rows) == CATCH_UP_ROWS else committed

    def _load(self, conn: sa.Connection, changed: sa.ColumnElement[bool]) -> None:
        # Each city's masks as one string: the database groups them faster than rows
        # come out one by one, and numpy parses it (a Python object a mask would take
        # seconds at millions of users) and removes the repeats.
        masks = sa.func.aggregate_strings(sa.cast(assignments.c.interest_mask, sa.String), ",")
        per_city = (
            sa.select(assignments.c.city_key, masks).where(changed).group_by(assignments.c.city_key)
        )
        everyone = []
        for key, found in conn.execute(per_city):
            found_masks = np.unique(np.fromstring(found, dtype=np.int32, sep=","))
            everyone.append(found_masks)
            if key is not None:
                self.by_city[key] = MaskSet(found_masks)
        if everyone:
            self.everyone = MaskSet(np.concatenate(everyone))

    def _add(self, rows: Sequence[tuple[str | None, int]]) -> None:
        if not rows:
            return
        masks = np.array([mask for _, mask in rows], np.int32)
        self.everyone.add(masks)
        by_city: dict[str, list[int]] = {}
        for key, mask in rows:
            if key is not None:
                by_city.setdefault(key, []).append(mask)
        for key, city_masks in by_city.items():
            self.by_city.setdefault(key, MaskSet()).add(np.array(city_masks, np.int32))

    def of(self, city_key: str | None) -> np.ndarray:
        """The sets of the users of that city (all users': None)."""
        with self._lock:
            if city_key is None:
                return self.everyone.array()
            found = self.by_city.get(city_key)
            return found.array() if found is not None else np.empty(0, np.int32)


def _committed_changes(conn: sa.Connection) -> int:
    """The change number up to which every change is committed.

    On PostgreSQL, taking CHANGES_LOCK exclusive waits for the writers in flight (each
    holds it shared until it commits): no number below the largest is still to come.
    """
    query = sa.select(sa.func.coalesce(sa.func.max(assignments.c.seq), 0))
    with conn.begin():
        advisory_lock(conn, CHANGES_LOCK)
        return conn.execute(query).scalar_one()


class MaskProbe:
    """The first users (by number) of each of some interest sets, but one user, and
    of one city or all: written once per database (the statement of a batch of sets)."""

    def __init__(self, postgresql: bool):
        self.postgresql = postgresql
        if postgresql:  # one statement, whatever the number of sets
            self._statement = {
                city: f"SELECT u.user_no, u.interest_mask FROM unnest(%s::int[]) AS m(mask)"
                f" CROSS JOIN LATERAL (SELECT user_no, interest_mask FROM {assignments.name}"
                f" WHERE interest_mask = m.mask AND user_no <> %s"
                + (" AND city_key = %s" if city else "")
                + " ORDER BY user_no LIMIT %s) AS u"
                for city in (False, True)
            }
        else:  # one subquery a set
            self._statement = {
                city: f"SELECT * FROM (SELECT user_no, interest_mask FROM {assignments.name}"
                f" WHERE interest_mask = ? AND user_no <> ?"
                + (" AND city_key = ?" if city else "")
                + " ORDER BY user_no LIMIT ?)"
                for city in (False, True)
            }
        mark = "%s" if postgresql else "?"
        # Every set that shares no interest (similarity 0, as two empty sets): one
        # condition rather than thousands of sets, in the order of user numbers.
        self._disjoint = {
            city: f"SELECT user_no, interest_mask FROM {assignments.name}"
            f" WHERE interest_mask & {mark} = 0 AND user_no <> {mark}"
            + (f" AND city_key = {mark}" if city else "")
            + f" ORDER BY user_no LIMIT {mark}"
            for city in (False, True)
        }

    def first_users(
        self, conn: sa.Connection, masks: Sequence[int], me: int, city_key: str | None, k: int
    ) -> list[tuple[int, int]]:
        """(user number, mask) of the first ``k`` users of each mask, ``me`` left out."""
        statement = self._statement[city_key is not None]
        if self.postgresql:
            return conn.exec_driver_sql(statement, _parameters(list(masks), me, city_key, k)).all()
        found = []
        for start in range(0, len(masks), SETS_PER_STATEMENT):
            chunk = list(masks[start : start + SETS_PER_STATEMENT])
            chunk += [NO_SET] * ((1 << (len(chunk) - 1).bit_length()) - len(chunk))
            query = " UNION ALL ".join([statement] * len(chunk))
            parameters = tuple(p for mask in chunk for p in _parameters(mask, me, city_key, k))
            found += conn.exec_driver_sql(query, parameters).all()
        return found

    def first_disjoint_users(
        self, conn: sa.Connection, mask: int, me: int, city_key: str | None, k: int
    ) -> list[tuple[int, int]]:
        """(user number, mask) of the first ``k`` users who share no interest with
        ``mask``, ``me`` left out."""
        statement = self._disjoint[city_key is not None]
        return conn.exec_driver_sql(statement, _parameters(mask, me, city_key, k)).all()


def _parameters(sets: object, me: int, city_key: str | None, k: int) -> tuple:
    """A probe's parameters, in its statements' order (the city's only when given);
    ``sets``: a mask, or PostgreSQL's list of them."""
    return (sets, me, k) if city_key is None else (sets, me, city_key, k)


PROBES = {postgresql: MaskProbe(postgresql) for postgresql in (False, True)}


@dataclass(frozen=True)
class Neighbour:
    user_no: int
    similarity: float
    mask: int


def most_similar(
    conn: sa.Connection, sets: np.ndarray, me: int, mask: int, city_key: str | None, k: int
) -> list[Neighbour]:
    """The ``k`` users most like ``mask`` (never ``me``), most similar first, ties by user
    number; of ``city_key`` only, unless None. ``sets``: every set of those users."""
    probe = PROBES[conn.dialect.name == "postgresql"]
    found: list[tuple[int, int, int]] = []  # (level, user number, mask)
    for masks, levels in ranked_batches(sets, mask):
        batch = masks.tolist()
        level_of = dict(zip(batch, levels.tolist(), strict=True))
        users = probe.first_users(conn, batch, me, city_key, k)
        found += [(level_of[user_mask], user_no, user_mask) for user_no, user_mask in users]
        if len(found) >= k:  # every user of a later batch is less similar
            break
    else:
        zero = len(SIMILARITIES) - 1
        users = probe.first_disjoint_users(conn, mask, me, city_key, k - len(found))
        found += [(zero, user_no, user_mask) for user_no, user_mask in users]
    found.sort()
    return [Neighbour(no, float(SIMILARITIES[level]), m) for level, no, m in found[:k]]


class SimilarUsers:
    """``find``: a stored user and the users most like them, with their assignments."""

    def __init__(self, database: Database):
        self.database = database
        self.interest_sets = InterestSets()

    def load(self, database: Database | None = None) -> None:
        """Read every stored interest set now, rather than on the first query (a server
        does, before its workers fork and share them); through ``database`` if given."""
        (database or self.database).run(self.interest_sets.refresh, write=False)

    def find(
        self, user_id: str, k: int, same_city: bool
    ) -> tuple[Assignment, list[tuple[Neighbour, Assignment]]] | None:
        """The user and the ``k`` stored users most like them, with their current
        assignments; ``same_city``: of the user's city (none for a user without one).
        None when the user is not stored."""
        me = sa.select(assignments).where(assignments.c.user_id == user_id)

        def work(conn: sa.Connection) -> tuple[sa.Row, list[Neighbour], list[sa.Row]] | None:
            self.interest_sets.refresh(conn)  # first: it ends its own transaction
            row = conn.execute(me).first()
            if row is None:
                return None
            if same_city and row.city_key is None:  # nobody shares a city they have not
                return row, [], []
            city = row.city_key if same_city else None
            sets = self.interest_sets.of(city)
            found = most_similar(conn, sets, row.user_no, row.interest_mask, city, k)
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
        # A user erased between the ranking and this read is left out.
        neighbours = [(n, by_number[n.user_no]) for n in found if n.user_no in by_number]
        return Assignment.from_row(row), neighbours
