"""A fleet on one database: two instances started from two separate copies of the
repository (two dynos of one slug: nothing on disk shared), under load, while the
commands run from a third directory with only DATABASE_URL. A promotion and a rollback
reach every worker of both within seconds, with no failed request; an instance
started after the promotion serves the promoted version at once; the copies' working
trees stay unchanged."""

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from helpers.fleet import copy_of_repository, instance, working_tree_changes
from helpers.waiting import wait_until

from nomads_cluster.segmentation.interests import INTEREST_KEYS

SWITCH_SECONDS = 5  # the promise: every worker of every instance within this


def command(third: Path, database_url: str, *arguments: str) -> str:
    """``python -m nomads_cluster ...`` as a one-off dyno runs it: from a directory with
    no model/, with DATABASE_URL and nothing else of the service's."""
    result = subprocess.run(
        [sys.executable, "-m", "nomads_cluster", *arguments],
        cwd=third,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "DATABASE_URL": database_url,
            "PATH": os.environ["PATH"],
            "PYTHONDONTWRITEBYTECODE": "1",
            "HOME": str(third),
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


class Load:
    """Clients posting users to /cluster on each port without pause; every answer is
    kept with the time it was sent."""

    def __init__(self, ports: list[int], clients_per_port: int = 3):
        self.answers: list[tuple[float, int, int, str]] = []  # sent, port, status, version
        self._stop = threading.Event()
        rng = np.random.default_rng(11)
        self._bodies = [
            json.dumps(
                {
                    "_id": f"u{i}",
                    "interests": {k: True for k in INTEREST_KEYS if rng.random() < 0.3},
                }
            )
            for i in range(500)
        ]
        self._threads = [
            threading.Thread(target=self._post, args=(port, n), daemon=True)
            for port in ports
            for n in range(clients_per_port)
        ]

    def add(self, port: int) -> None:
        thread = threading.Thread(target=self._post, args=(port, 99), daemon=True)
        self._threads.append(thread)
        thread.start()

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _post(self, port: int, offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        sent = 0
        while not self._stop.is_set():
            body = self._bodies[(offset * 97 + sent) % len(self._bodies)]
            started = time.monotonic()
            try:
                connection.request("POST", "/cluster", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = json.loads(response.read())
                self.answers.append((started, port, response.status, answer.get("model_version")))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.answers.append((started, port, 0, repr(exc)))
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            sent += 1
        connection.close()


def versions_between(load: Load, start: float, end: float) -> dict[int, set[str]]:
    """The versions each port answered with, for requests sent in [start, end)."""
    seen: dict[int, set[str]] = {}
    for sent, port, _, version in list(load.answers):
        if start <= sent < end:
            seen.setdefault(port, set()).add(version)
    return seen


def workers_serving(port: int) -> dict[str, str]:
    """Each live worker's pid -> the version it serves (the model-info gauge)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    serving = {}
    for line in text.splitlines():
        if line.startswith("nomads_model_info{") and line.endswith(" 1.0"):
            labels = dict(
                part.split("=", 1)
                for part in line[line.index("{") + 1 : line.index("}")].split(",")
            )
            serving[labels["pid"].strip('"')] = labels["version"].strip('"')
    return serving


def run_fleet(database_url: str, tmp_path: Path, survey_path: Path) -> None:
    copies = [copy_of_repository(tmp_path / name) for name in ("dyno-a", "dyno-b", "dyno-c")]
    third = tmp_path / "laptop"
    third.mkdir()
    with ExitStack() as running:
        ports = [
            running.enter_context(instance(copy, database_url, tmp_path / f"{copy.name}.log"))
            for copy in copies[:2]
        ]
        first = json.loads(command(third, database_url, "models", "--json"))
        (committed,) = [v["version"] for v in first if v["served"]]
        trained = command(third, database_url, "train", "--data", str(survey_path), "--warm-start")
        (candidate,) = [
            v["version"]
            for v in json.loads(command(third, database_url, "models", "--json"))
            if not v["served"]
        ]
        assert f"model {candidate}" in trained

        with Load(ports) as load:
            assert wait_until(lambda: len(load.answers) > 50)
            command(third, database_url, "promote", candidate)
            promoted = time.monotonic()
            # Every worker of both instances within SWITCH_SECONDS (their gauges say so).
            assert wait_until(
                lambda: all(set(workers_serving(port).values()) == {candidate} for port in ports),
                seconds=SWITCH_SECONDS,
            ), [workers_serving(port) for port in ports]
            later = running.enter_context(
                instance(copies[2], database_url, tmp_path / "dyno-c.log")
            )
            load.add(later)
            assert wait_until(lambda: time.monotonic() > promoted + SWITCH_SECONDS + 2)
            rolling_back = time.monotonic()
            command(third, database_url, "rollback")
            rolled_back = time.monotonic()
            assert wait_until(
                lambda: all(
                    set(workers_serving(port).values()) == {committed} for port in [*ports, later]
                ),
                seconds=SWITCH_SECONDS,
            )
            assert wait_until(lambda: time.monotonic() > rolled_back + SWITCH_SECONDS + 1)

    failed = [(status, version) for _, _, status, version in load.answers if status != 200]
    assert failed == []
    assert versions_between(load, 0, rolling_back)[later] == {candidate}  # at once
    after_promotion = versions_between(load, promoted + SWITCH_SECONDS, rolling_back)
    assert after_promotion == {ports[0]: {candidate}, ports[1]: {candidate}, later: {candidate}}
    after_rollback = versions_between(load, rolled_back + SWITCH_SECONDS, float("inf"))
    assert after_rollback == {port: {committed} for port in [*ports, later]}
    for copy in copies:
        assert working_tree_changes(copy) == ""


def test_a_fleet_on_postgresql_follows_promote_and_rollback(postgres_url, tmp_path, survey_path):
    run_fleet(postgres_url, tmp_path, survey_path)


def test_a_fleet_on_one_sqlite_file_follows_promote_and_rollback(tmp_path, survey_path):
    run_fleet(f"sqlite:///{tmp_path / 'fleet.sqlite3'}", tmp_path, survey_path)
