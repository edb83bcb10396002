"""A real gunicorn serving the app, for the tests that go through sockets."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nomads_cluster.testing import free_port, wait_until_healthy

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def run_gunicorn(
    env: dict[str, str], log_path: Path, workers: int = 2, cwd: Path = REPO
) -> Iterator[int]:
    """gunicorn as the Procfile runs it (--preload), from ``cwd`` (the repository or a
    copy of it), on a free port; yields the port."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "app_cluster:app",
        "--preload",
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
    ]
    with log_path.open("w") as log:
        server = subprocess.Popen(
            command, cwd=cwd, env={**os.environ, **env}, stdout=log, stderr=log
        )
        try:
            try:
                wait_until_healthy(port, seconds=60, server=server)
            except RuntimeError as error:
                pytest.fail(f"gunicorn in {cwd} did not start ({error}): {log_path.read_text()}")
            yield port
        finally:
            server.terminate()
            server.wait(timeout=30)
