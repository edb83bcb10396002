"""`make bench`, the change feed's deliveries: how many events a second the worker
delivers to a local receiver, and how long an event takes from its commit to the
receiver.

    .venv/bin/python bench/webhooks.py [--events 20000] [--seconds 10]

1. Throughput: a store holding --events events (sign-ups with cities), delivered by
   the worker's own loop in batches of 100 to a receiver that verifies each signature.
2. Lag: gunicorn and `nomads-cluster worker` (the Procfile's processes), 50 sign-ups
   a second for --seconds; for each event, the receiver's arrival time less the time
   the change was made.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.run import fresh_postgres_url  # noqa: E402
from nomads_cluster.testing import WebhookReceiver, free_port, wait_until_healthy  # noqa: E402

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CITIES = ["Madrid", "Lisboa", "Porto", "Berlin", "Oslo"]


def throughput(database_url: str, events: int) -> float:
    """Events a second, delivering ``events`` events already written."""
    from nomads_cluster.store.engine import create_store_engine
    from nomads_cluster.store.migrations import upgrade
    from nomads_cluster.store.records import Assignment
    from nomads_cluster.store.users import UserStore
    from nomads_cluster.worker.webhooks import WebhookDelivery

    store = UserStore(create_store_engine(database_url, timeout=30))
    upgrade(store.engine)
    for start in range(0, events, 1000):
        store.assignments.save(
            [
                Assignment(f"t{i}", ("surf",), 1 + i % 4, {}, "bench", city=CITIES[i % 5])
                for i in range(start, min(start + 1000, events))
            ]
        )
    receiver = WebhookReceiver(SECRET)
    delivery = WebhookDelivery(store, receiver.url, SECRET, batch_size=100)
    started = time.perf_counter()
    while len(receiver.event_ids()) < events:
        delivery.step()
    seconds = time.perf_counter() - started
    receiver.close()
    store.engine.dispose()
    return events / seconds


def lag(database_url: str, seconds: float) -> list[float]:
    """Seconds from each change to its arrival at the receiver, through the processes
    the Procfile runs."""
    receiver = WebhookReceiver(SECRET)
    port = free_port()
    env = {
        **os.environ,
        "NOMADS_DATABASE_URL": database_url,
        "NOMADS_WEBHOOK_URL": receiver.url,
        "NOMADS_WEBHOOK_SECRET": SECRET,
        "NOMADS_LOG_LEVEL": "WARNING",
        "PORT": str(port),
    }
    subprocess.run(
        [sys.executable, "-m", "nomads_cluster", "db", "upgrade"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    commands = (
        [sys.executable, "-m", "gunicorn", "app_cluster:app"],
        [sys.executable, "-m", "nomads_cluster", "worker"],
    )
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    processes = [subprocess.Popen(command, cwd=REPO, env=env, **quiet) for command in commands]
    try:
        wait_until_healthy(port, server=processes[0])
        sent, started = 0, time.monotonic()
        while time.monotonic() - started < seconds:
            body = {"_id": f"lag{sent}", "interests": {"surf": True}, "city": CITIES[sent % 5]}
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/cluster", json.dumps(body).encode(), method="POST"
            )
            urllib.request.urlopen(request, timeout=10).read()
            sent += 1
            time.sleep(max(0.0, started + sent / 50 - time.monotonic()))
        deadline = time.monotonic() + 30
        while len(set(receiver.event_ids())) < sent and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        receiver.close()
    first_arrivals = {}
    for _, delivered, arrived_at in receiver.deliveries:
        for event in delivered:
            first_arrivals.setdefault(event["id"], arrived_at - _time(event["occurred_at"]))
    return list(first_arrivals.values())


def _time(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work_dir:
        databases = {"SQLite": lambda name: f"sqlite:///{Path(work_dir) / name}.sqlite3"}
        if fresh_postgres_url("nomads_bench_webhooks") is not None:
            databases["PostgreSQL"] = fresh_postgres_url
        print("\nthe change feed's deliveries to a local receiver (verifying each signature):\n")
        print("| database | events/s (batches of 100) | lag p50 s | lag p99 s | events |")
        print("|---|---|---|---|---|")
        for name, url_of in databases.items():
            rate = throughput(url_of("nomads_bench_webhooks"), args.events)
            lags = sorted(lag(url_of("nomads_bench_webhooks_lag"), args.seconds))
            p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
            print(
                f"| {name} | {rate:,.0f} | {statistics.median(lags):.3f} | {p99:.3f} | "
                f"{len(lags)} |"
            )


if __name__ == "__main__":
    main()
