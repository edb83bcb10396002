"""Several gunicorn workers writing at once: every acknowledged assignment is stored."""

import http.client
import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers.live_server import run_gunicorn

from nomads_cluster.store.engine import create_store_engine
from nomads_cluster.store.tables import assignment_history, assignments

CLIENTS, REQUESTS_PER_CLIENT = 8, 100


@pytest.fixture
def gunicorn(database_url, tmp_path):
    """The Procfile's server (2 workers, --preload) on a free port and the test database."""
    with run_gunicorn({"NOMADS_DATABASE_URL": database_url}, tmp_path / "gunicorn.log") as port:
        yield port


def post_many(port: int, client: int) -> list[tuple[str, int, dict]]:
    """One keep-alive client posting its users; (id, status, answer) of each."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    answers = []
    for n in range(REQUESTS_PER_CLIENT):
        user_id = f"c{client}-{n % 20}"  # repeated ids: updates race with each other too
        interests = {"surf": n % 2 == 0, "museums": n % 3 == 0, "coffee": client % 2 == 0}
        body = json.dumps({"_id": user_id, "interests": interests})
        connection.request("POST", "/cluster", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        answers.append((user_id, response.status, json.loads(response.read())))
    connection.close()  # gthread keeps connections alive
    return answers


def test_concurrent_writes_from_several_workers_are_all_stored(gunicorn, database_url):
    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = [
            a for batch in pool.map(post_many, [gunicorn] * CLIENTS, range(CLIENTS)) for a in batch
        ]
    statuses = [status for _, status, _ in answers]
    assert statuses == [200] * len(answers), [a for a in answers if a[1] != 200][:3]

    engine = create_store_engine(database_url, timeout=5)
    with engine.connect() as conn:
        history = conn.execute(sa.select(sa.func.count()).select_from(assignment_history))
        assert history.scalar_one() == len(answers)
        current = dict(conn.execute(sa.select(assignments.c.user_id, assignments.c.cluster)).all())
    engine.dispose()
    # Each client posts its own users in order: the last answer of each user is current.
    last = {user_id: answer["cluster"] for user_id, _, answer in answers}
    assert current == last


def worker_pids(port: int) -> list[int]:
    """The gunicorn workers serving on the port (the processes whose parent serves it too)."""
    found = subprocess.run(
        ["pgrep", "-f", "--", f"--bind 127.0.0.1:{port}"], capture_output=True, text=True
    ).stdout.split()
    pids = {int(pid) for pid in found}
    parents = {
        pid: int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        for pid in pids
        if Path(f"/proc/{pid}/stat").exists()
    }
    return sorted(pid for pid, parent in parents.items() if parent in pids)


def post_until_stopped(port: int, client: int, stop: threading.Event) -> list[tuple[str, int]]:
    """Post new users without pause, reconnecting after errors; (id, cluster) of each 200."""
    acknowledged, n = [], 0
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        n += 1
        user_id = f"k{client}-{n}"
        body = json.dumps({"_id": user_id, "interests": {"surf": n % 2 == 0, "parks": True}})
        try:
            connection.request("POST", "/cluster", body)
            response = connection.getresponse()
            answer = json.loads(response.read())
        except (OSError, http.client.HTTPException, json.JSONDecodeError):
            connection.close()  # the worker died under it: a new connection
            continue
        if response.status == 200:
            acknowledged.append((user_id, answer["cluster"]))
    connection.close()
    return acknowledged


def test_a_worker_killed_amid_group_commits_loses_no_acknowledged_assignment(
    gunicorn, database_url
):
    stop = threading.Event()
    with ThreadPoolExecutor(CLIENTS) as pool:
        runs = [pool.submit(post_until_stopped, gunicorn, c, stop) for c in range(CLIENTS)]
        try:
            victim = worker_pids(gunicorn)[0]
            time.sleep(1)  # requests in flight, many waiting for their group's commit
            os.kill(victim, signal.SIGKILL)
            time.sleep(1)  # gunicorn starts a new worker; traffic goes on
        finally:
            stop.set()
        acknowledged = [a for run in runs for a in run.result()]
    assert victim not in worker_pids(gunicorn)
    assert len(acknowledged) > CLIENTS

    engine = create_store_engine(database_url, timeout=5)
    with engine.connect() as conn:
        stored = set(
            conn.execute(sa.select(assignment_history.c.user_id, assignment_history.c.cluster))
        )
    engine.dispose()
    missing = [a for a in acknowledged if a not in stored]
    assert missing == [], f"{len(missing)} acknowledged assignments are not stored"
