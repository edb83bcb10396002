"""How long a promotion takes to reach a fleet: two instances (gunicorn, 2 workers each)
on one database, each answering /cluster/preview to clients without pause, and
`nomads-cluster promote` then `rollback`, in turn. Reported: the time from the
promotion's record in the registry to the last answer of the old version, per instance
and for the fleet (the later of the two).

    .venv/bin/python bench/promotion.py [--switches 6]

On PostgreSQL the workers hear the registry's notification; on SQLite they read the
registry every NOMADS_MODEL_CHECK_SECONDS (the default, 2 s).
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.run import file_candidate, fresh_postgres_url  # noqa: E402
from nomads_cluster.testing import free_port, wait_until_healthy  # noqa: E402

BODY = json.dumps({"_id": "promotion", "interests": {"surf": True, "museums": True}})
CLIENTS_PER_INSTANCE = 4


def cli(env: dict[str, str], *arguments: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "nomads_cluster", *arguments],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


class Watch:
    """Clients answered without pause; the time of the last answer of each version."""

    def __init__(self, port: int):
        self.last: dict[str, float] = {}
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._ask, args=(port,), daemon=True)
            for _ in range(CLIENTS_PER_INSTANCE)
        ]
        for thread in self._threads:
            thread.start()

    def _ask(self, port: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while not self._stop.is_set():
            try:
                connection.request("POST", "/cluster/preview", BODY)
                response = connection.getresponse()
                version = json.loads(response.read())["model_version"]
                if response.status != 200:
                    self.errors += 1
                self.last[version] = time.time()
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                self.errors += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def promoted_at(database_url: str) -> float:
    """When the registry recorded its last promotion or rollback (this machine's clock)."""
    import sqlalchemy as sa

    from nomads_cluster.store.engine import normalize_url
    from nomads_cluster.store.tables import model_promotions

    engine = sa.create_engine(normalize_url(database_url))
    query = sa.select(model_promotions.c.promoted_at).order_by(model_promotions.c.id.desc())
    with engine.connect() as conn:
        moment = conn.execute(query.limit(1)).scalar_one()
    engine.dispose()
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def measure(database_url: str, switches: int) -> tuple[list[float], list[float], int]:
    """Seconds from each promotion's record to the last old answer: per instance, and
    for the fleet (the slower instance); and the failed answers."""
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(REPO)}
    env.pop("NOMADS_DATABASE_URL", None)
    cli(env, "db", "upgrade")
    served, candidate = file_candidate(database_url)
    servers, ports = [], []
    for _ in range(2):
        port = free_port()
        command = [sys.executable, "-m", "gunicorn", "app_cluster:app", "-b", f"127.0.0.1:{port}"]
        server = subprocess.Popen(
            command,
            cwd=REPO,
            env={**env, "PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        servers.append(server)
        ports.append(port)
    per_instance, fleet, errors = [], [], 0
    try:
        for port, server in zip(ports, servers, strict=True):
            wait_until_healthy(port, server=server)
        watches = [Watch(port) for port in ports]
        time.sleep(1)
        for switch in range(switches):
            old, new = (served, candidate) if switch % 2 == 0 else (candidate, served)
            cli(env, *(["promote", new] if switch % 2 == 0 else ["rollback"]))
            time.sleep(4)  # past the slowest path, SQLite's poll
            recorded = promoted_at(database_url)
            lags = [max(watch.last.get(old, recorded) - recorded, 0.0) for watch in watches]
            per_instance += lags
            fleet.append(max(lags))
        for watch in watches:
            watch.stop()
            errors += watch.errors
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
    return per_instance, fleet, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--switches", type=int, default=6, help="promotions and rollbacks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work_dir:
        databases = {"SQLite": f"sqlite:///{Path(work_dir) / 'promotion.sqlite3'}"}
        postgres = fresh_postgres_url("nomads_bench_promotion")
        if postgres:
            databases["PostgreSQL"] = postgres
        print(
            f"\npromote/rollback to the last old answer, 2 instances x 2 workers, "
            f"{args.switches} switches (s):\n"
        )
        print("| database | fleet median | fleet max | instance median | failed answers |")
        print("|---|---|---|---|---|")
        for name, url in databases.items():
            per_instance, fleet, errors = measure(url, args.switches)
            print(
                f"| {name} | {statistics.median(fleet):.3f} | {max(fleet):.3f} | "
                f"{statistics.median(per_instance):.3f} | {errors} |"
            )


if __name__ == "__main__":
    main()
