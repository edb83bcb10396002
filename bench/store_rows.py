"""`make bench`, part 3: rows stored per second, on SQLite and on PostgreSQL.

- `POST /cluster/batch`: 1,000 users a request, from 4 clients at once, to the
  Procfile's server (every answer committed first); rows stored per second over
  --batches requests.
- `nomads-cluster assign FILE -o OUT --store`: 1,000,000 rows (the file of part 2),
  scored, written and stored (one transaction per 50,000-row chunk); rows per second
  of the whole command. `--cities`: each row also names one of 50 cities of Zipf-like
  sizes, so each chunk also places its users in rooms (a bulk seed of a store from
  an export: `--rows 10000000 --cities`).
"""

import argparse
import json
import os
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from assign_file import BIN, write_input
from run import OURS, REPO, fresh_postgres_url, launch, random_bodies, stop

from nomads_cluster.testing import free_port, wait_until_healthy

CLIENTS = 4


def post_batch(port: int, body: bytes) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/cluster/batch", body)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["assigned"]


def batch_rows_per_second(env: dict[str, str], batches: int) -> float:
    users = [json.loads(body) for body in random_bodies(1000)]
    bodies = [
        json.dumps({"users": [{**user, "_id": f"{n}-{user['_id']}"} for user in users]}).encode()
        for n in range(batches)
    ]
    port = free_port()
    server = launch(OURS, REPO, port, env)
    try:
        wait_until_healthy(port, server=server)
        started = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            stored = sum(pool.map(post_batch, [port] * batches, bodies))
        return stored / (time.perf_counter() - started)
    finally:
        stop(server)


def assign_store_rows_per_second(env: dict[str, str], path: Path, rows: int) -> float:
    with tempfile.TemporaryDirectory() as out_dir:
        command = [
            str(BIN / "nomads-cluster"),
            "assign",
            str(path),
            "-o",
            str(Path(out_dir) / "out.csv"),
            "--store",
        ]
        started = time.perf_counter()
        subprocess.run(command, env=env, cwd=REPO, check=True, capture_output=True)
        return rows / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=40, help="batch requests per database")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for assign --store")
    parser.add_argument("--cities", action="store_true", help="rows with a city: rooms too")
    parser.add_argument("--only", choices=["SQLite", "PostgreSQL"], help="one database")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        databases = {"SQLite": f"sqlite:///{work_dir / 'rows.sqlite3'}"}
        postgres_url = fresh_postgres_url()
        if postgres_url:
            databases["PostgreSQL"] = postgres_url
        users = work_dir / "users.csv"
        write_input(users, args.rows, cities=args.cities)
        if args.only:
            databases = {args.only: databases[args.only]}
        print(f"| database | /cluster/batch rows/s ({CLIENTS} clients) | assign --store rows/s |")
        print("|---|---|---|")
        for name, url in databases.items():
            env = {**os.environ, "NOMADS_DATABASE_URL": url}
            batch = batch_rows_per_second({"NOMADS_DATABASE_URL": url}, args.batches)
            started = time.perf_counter()
            assign = assign_store_rows_per_second(env, users, args.rows)
            minutes = (time.perf_counter() - started) / 60
            print(f"| {name} | {batch:,.0f} | {assign:,.0f} ({minutes:.1f} min) |", flush=True)


if __name__ == "__main__":
    main()
