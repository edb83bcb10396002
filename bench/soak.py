"""`make soak`: a minute of mixed traffic through nginx to two gunicorn instances on
PostgreSQL, with faults: a worker killed, then a whole instance, then PostgreSQL
restarted. Reports the requests sent, answered and failed, and checks that every
acknowledged assignment is in the database afterwards (exit status 1 if one is not,
or if the service does not answer again after the faults).

Runs on loopback with Debian's nginx and the local PostgreSQL server (which it
restarts: run it alone). Usage: .venv/bin/python bench/soak.py [--seconds 60]
"""

import argparse
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

READ_API_KEY = "soak-read-key-0123456789"  # the /users reads are the back end's

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from nomads_cluster.segmentation.interests import INTEREST_KEYS  # noqa: E402
from nomads_cluster.testing import free_port, wait_until_healthy  # noqa: E402

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SOAK_DB = "nomads_soak"
CLIENTS = 6
RECOVERY_SECONDS = 3  # after a fault, the service must answer again within this

NGINX_CONF = """
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{}}
http {{
    access_log off;
    upstream nomads {{
        server 127.0.0.1:{port_a} max_fails=1 fail_timeout=2s;
        server 127.0.0.1:{port_b} max_fails=1 fail_timeout=2s;
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 1m;
        location / {{
            proxy_pass http://nomads;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_next_upstream error timeout http_502;
            proxy_connect_timeout 1s;
            proxy_read_timeout 10s;
        }}
    }}
}}
"""


def fresh_database() -> str:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {SOAK_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {SOAK_DB}")
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + SOAK_DB


def restart_postgresql() -> float:
    """Restart the local cluster; the seconds it took."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    started = time.monotonic()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
    )
    return time.monotonic() - started


class Instance:
    """One gunicorn (the repo's gunicorn.conf.py: 2 workers, preloaded) on a port."""

    def __init__(self, port: int, database_url: str, work: Path, name: str):
        self.port, self.database_url, self.work, self.name = port, database_url, work, name
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "NOMADS_DATABASE_URL": self.database_url,
            "NOMADS_DATABASE_TIMEOUT": "2",
            "NOMADS_READ_API_KEY": READ_API_KEY,
            "WEB_CONCURRENCY": "2",
            "PORT": str(self.port),
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        log = (self.work / f"{self.name}.log").open("a")
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "app_cluster:app",
                "--bind",
                f"127.0.0.1:{self.port}",
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        wait_until_healthy(self.port, server=self.process)

    def workers(self) -> list[int]:
        assert self.process is not None
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def kill(self) -> None:
        """SIGKILL the master and its workers: a crash, not a shutdown."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)


class Traffic:
    """Clients sending mixed requests through nginx; what was sent and acknowledged."""

    def __init__(self, port: int):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.outcomes: Counter = Counter()  # (kind, status or error)
        self.timeline: list[tuple[float, bool]] = []  # (time, answered 2xx/4xx)
        self.acknowledged: dict[str, int] = {}  # user id -> segment answered
        self.started = time.monotonic()

    def request(self, connection, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        payload = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {READ_API_KEY}"}
        connection.request(method, path, payload, headers)
        response = connection.getresponse()
        data = response.read()
        is_json = response.getheader("Content-Type", "").endswith("json")
        return response.status, json.loads(data) if is_json and data else {}

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        known: list[str] = []
        while not self.stop.is_set():
            roll = rng.random()
            interests = {k: True for k in INTEREST_KEYS if rng.random() < 0.25}
            user = {"_id": uuid.uuid4().hex, "interests": interests}
            if roll < 0.7:
                kind, method, path, body = "assign", "POST", "/cluster", user
            elif roll < 0.8:
                users = [user, {**user, "_id": uuid.uuid4().hex}]
                kind, method, path, body = "batch", "POST", "/cluster/batch", {"users": users}
            elif roll < 0.9 and known:
                kind, method, path, body = "user", "GET", f"/users/{rng.choice(known)}", None
            else:
                kind, method, path, body = "segments", "GET", "/clusters", None
            try:
                status, answer = self.request(connection, method, path, body)
                outcome = status
            except (OSError, http.client.HTTPException) as exc:
                status, answer, outcome = 0, {}, type(exc).__name__
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
            with self.lock:
                self.outcomes[kind, outcome] += 1
                self.timeline.append((time.monotonic() - self.started, 0 < status < 500))
                if status == 200 and kind == "assign":
                    self.acknowledged[answer["_id"]] = answer["cluster"]
                    known.append(answer["_id"])
                elif status == 200 and kind == "batch":
                    for result in answer["results"]:
                        if result["status"] == 200:
                            self.acknowledged[result["_id"]] = result["cluster"]

    def answered_after(self, moment: float) -> bool:
        with self.lock:
            return any(t > moment and ok for t, ok in self.timeline)


def check_database(database_url: str, acknowledged: dict[str, int]) -> list[str]:
    """The acknowledged users whose stored segment is missing or another."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        rows = dict(conn.execute("SELECT user_id, cluster FROM assignments").fetchall())
    return [user for user, segment in acknowledged.items() if rows.get(user) != segment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    at = {  # when each fault happens, as parts of the run
        "kill a worker of instance A": 0.25,
        "kill instance B (master and workers)": 0.45,
        "restart PostgreSQL": 0.65,
        "start instance B again": 0.75,
    }

    database_url = fresh_database()
    work = Path(tempfile.mkdtemp(prefix="nomads-soak-"))
    port, port_a, port_b = free_port(), free_port(), free_port()
    a = Instance(port_a, database_url, work, "a")
    b = Instance(port_b, database_url, work, "b")
    (work / "nginx.conf").write_text(
        NGINX_CONF.format(work=work, port=port, port_a=port_a, port_b=port_b)
    )
    nginx = None
    events: list[str] = []
    try:
        a.start()
        b.start()
        nginx = subprocess.Popen(
            ["nginx", "-c", str(work / "nginx.conf"), "-p", str(work), "-g", "daemon off;"]
        )
        wait_until_healthy(port)
        traffic = Traffic(port)
        threads = [threading.Thread(target=traffic.client, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        faults = []
        for fault, part in at.items():
            moment = part * args.seconds
            time.sleep(max(0.0, moment - (time.monotonic() - traffic.started)))
            if fault.startswith("kill a worker"):
                victim = a.workers()[0]
                os.kill(victim, signal.SIGKILL)
                detail = f"pid {victim}"
            elif fault.startswith("kill instance"):
                b.kill()
                detail = f"port {port_b}"
            elif fault.startswith("restart"):
                detail = f"took {restart_postgresql():.1f} s"
            else:
                b.start()
                detail = f"healthy again on port {port_b}"
            happened = time.monotonic() - traffic.started
            faults.append((fault, happened))
            events.append(f"{happened:5.1f} s  {fault} ({detail})")
        time.sleep(max(0.0, args.seconds - (time.monotonic() - traffic.started)))
        traffic.stop.set()
        for thread in threads:
            thread.join()
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=10)
        a.stop()
        b.stop()

    missing = check_database(database_url, traffic.acknowledged)
    recovered = {
        fault: traffic.answered_after(moment + RECOVERY_SECONDS) for fault, moment in faults
    }
    sent = sum(traffic.outcomes.values())
    answered = sum(n for (_, outcome), n in traffic.outcomes.items() if outcome in range(200, 500))
    print(
        f"soak: {args.seconds:.0f} s, {CLIENTS} clients through nginx, 2 gunicorn x 2 workers, "
        f"PostgreSQL\n"
    )
    print("\n".join(events) + "\n")
    print(f"requests sent: {sent}; answered (2xx/4xx): {answered}; failed: {sent - answered}")
    for (kind, outcome), n in sorted(traffic.outcomes.items(), key=str):
        print(f"  {kind:9} {outcome}: {n}")
    print(
        f"acknowledged assignments: {len(traffic.acknowledged)}; in the database: "
        f"{len(traffic.acknowledged) - len(missing)}; missing: {len(missing)}"
    )
    for fault, ok in recovered.items():
        print(f"answering {RECOVERY_SECONDS} s after '{fault}': {'yes' if ok else 'NO'}")
    if missing or not all(recovered.values()) or not traffic.acknowledged:
        sys.exit(1)


if __name__ == "__main__":
    main()
