"""`make bench`, part 4: `GET /users/<id>/similar` with 1,000,000 stored users.

The users are survey answers with 10% of their interests flipped (as varied as real
sign-ups: almost every one differs), in 50 cities of Zipf-like sizes, loaded straight
into the `assignments` table of each database. Through the app (Flask's test client, the
read key, the JSON answer), in rounds that alternate the databases:

- `GET /users/<id>` (one row by its key): the baseline of the same run;
- `GET /users/<id>/similar?k=10`, and with `&city=same`;

each for --queries random users per round. The interest sets are read first, as a
server does before its workers fork (timed apart, with their size); each query then
reads only the changes since the previous one.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from run import fresh_postgres_url

from nomads_cluster import create_app
from nomads_cluster.cities import city_key
from nomads_cluster.cli.model import DEFAULT_SURVEY
from nomads_cluster.segmentation.interests import INTEREST_KEYS, decode_masks
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR
from nomads_cluster.segmentation.survey import read_survey
from nomads_cluster.store.tables import SEQ_SEQUENCE, USER_NO_SEQUENCE

READ_KEY = "bench-read-key-0123456789"
CITIES = [f"City {i}" for i in range(50)]
COLUMNS = (
    "user_id",
    "id_is_int",
    "interests",
    "cluster",
    "scores",
    "model_version",
    "assigned_at",
    "source",
    "city",
    "city_key",
    "interest_mask",
    "user_no",
    "seq",
)


def make_users(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Interest masks and city indexes of ``n`` users."""
    rng = np.random.default_rng(seed)
    survey = read_survey(DEFAULT_SURVEY).features.astype(bool)
    rows = survey[rng.integers(0, len(survey), n)]
    rows ^= rng.random(rows.shape) < 0.1
    masks = (rows * (1 << np.arange(len(INTEREST_KEYS)))).sum(axis=1)
    weights = 1 / np.arange(1, len(CITIES) + 1)
    cities = rng.choice(len(CITIES), n, p=weights / weights.sum())
    return masks, cities


def rows_of(masks: np.ndarray, cities: np.ndarray, segments: np.ndarray):
    for i, (mask, city, segment) in enumerate(
        zip(masks.tolist(), cities.tolist(), segments.tolist(), strict=True)
    ):
        interests = [k for b, k in enumerate(INTEREST_KEYS) if mask >> b & 1]
        yield (
            f"u{i:07d}",
            False,
            json.dumps(interests),
            segment,
            '{"1": 0.1}',
            "bench",
            "2026-12-02 00:00:00",
            "bench",
            CITIES[city],
            city_key(CITIES[city]),
            mask,
            i + 1,
            i + 1,
        )


def load(app, masks: np.ndarray, cities: np.ndarray) -> None:
    """Straight into the assignments table, each user in the served model's segment."""
    segments = app.extensions["segment_model"].assign_users(decode_masks(masks))[0]
    engine = app.extensions["user_store"].engine
    names = ", ".join(COLUMNS)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            cursor.execute("SET statement_timeout = 0")  # the load, not a request
            with cursor.copy(f"COPY assignments ({names}) FROM STDIN") as copy:
                for row in rows_of(masks, cities, segments):
                    copy.write_row(row)
            for sequence in (USER_NO_SEQUENCE, SEQ_SEQUENCE):
                cursor.execute(f"SELECT setval('{sequence.name}', {len(masks)})")
        else:
            marks = ", ".join("?" * len(COLUMNS))
            cursor.executemany(
                f"INSERT INTO assignments ({names}) VALUES ({marks})",
                rows_of(masks, cities, segments),
            )
        raw.commit()
    finally:
        raw.close()


def timed_get(client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path, headers={"Authorization": f"Bearer {READ_KEY}"})
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.get_json()
    return elapsed * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--queries", type=int, default=40)
    args = parser.parse_args()
    masks, cities = make_users(args.users)
    print(f"{args.users:,} users, {len(np.unique(masks)):,} distinct interest sets")
    work = Path(tempfile.mkdtemp())
    urls = {"SQLite": f"sqlite:///{work / 'similar.sqlite3'}"}
    if (postgres := fresh_postgres_url()) is not None:
        urls["PostgreSQL"] = postgres
    apps = {}
    for name, url in urls.items():
        app = create_app(
            {
                "MODEL_DIR": str(DEFAULT_MODEL_DIR),
                "DATABASE_URL": url,
                "READ_API_KEY": READ_KEY,
                "LOG_LEVEL": "WARNING",
            }
        )
        started = time.perf_counter()
        load(app, masks, cities)
        print(f"{name}: loaded in {time.perf_counter() - started:.1f} s")
        similar = app.extensions["user_store"].similar_users
        started = time.perf_counter()
        similar.load()  # as a server does before it forks its workers (store.users.preload)
        loaded = time.perf_counter() - started
        first = timed_get(app.test_client(), "/users/u0000000/similar")
        size = similar.interest_sets.nbytes / 1e6
        print(
            f"{name}: interest sets read in {loaded:.1f} s, {size:.0f} MB (all users'"
            f" and each city's); first query after {first:.0f} ms"
        )
        apps[name] = app
    rng = np.random.default_rng(11)
    paths = {
        "GET /users/<id> (baseline)": "/users/{}",
        "similar?k=10": "/users/{}/similar?k=10",
        "similar?k=10&city=same": "/users/{}/similar?k=10&city=same",
    }
    times = {(db, kind): [] for db in apps for kind in paths}
    medians = {key: [] for key in times}
    for _ in range(args.rounds):
        for db, app in apps.items():
            client = app.test_client()
            for kind, path in paths.items():
                ids = rng.integers(0, args.users, args.queries)
                got = [timed_get(client, path.format(f"u{i:07d}")) for i in ids]
                times[db, kind] += got
                medians[db, kind].append(statistics.median(got))
    print(f"\n{args.rounds} rounds x {args.queries} queries, ms (p50 [rounds' p50 range], p95):")
    for (db, kind), got in times.items():
        got.sort()
        low, high = min(medians[db, kind]), max(medians[db, kind])
        p95 = got[int(0.95 * (len(got) - 1))]
        baseline = statistics.median(times[db, "GET /users/<id> (baseline)"])
        print(
            f"  {db:10} {kind:28} p50 {statistics.median(got):6.2f} [{low:.2f}-{high:.2f}]"
            f"  p95 {p95:6.2f}  {statistics.median(got) / baseline:5.1f}x baseline"
        )
    for app in apps.values():
        app.extensions["user_store"].engine.dispose()


if __name__ == "__main__":
    main()
