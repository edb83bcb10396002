"""A real gunicorn serving the app, for the tests that go through sockets."""

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def run_gunicorn(env: dict[str, str], log_path: Path, workers: int = 2) -> Iterator[int]:
    """gunicorn as the Procfile runs it (--preload), on a free port; yields the port."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "app_cluster:app", "--preload",
               "--workers", str(workers), "--bind", f"127.0.0.1:{port}"]  # fmt: skip
    with log_path.open("w") as log:
        server = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    connection.request("GET", "/health")
                    if connection.getresponse().status == 200:
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"gunicorn did not start: {log_path.read_text()}")
                    time.sleep(0.1)
            yield port
        finally:
            server.terminate()
            server.wait(timeout=30)
