"""Instances of the service as a fleet runs them: each from a copy of the repository of
its own (two dynos of one slug), gunicorn as the Procfile starts it."""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nomads_cluster.testing import free_port, wait_until_healthy

from .live_server import REPO

CHECK_SECONDS = "1"  # each worker's poll of the model registry


def copy_of_repository(target: Path) -> Path:
    """The repository's files as a deploy has them (tracked and new, none ignored), in
    a git repository of their own, so that any change to them shows."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    git = ["git", "-c", "user.name=fleet", "-c", "user.email=fleet@test"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "slug"]):
        subprocess.run([*git, *command], cwd=target, check=True, capture_output=True)
    return target


def working_tree_changes(copy: Path) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--ignored"],
        cwd=copy, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


@contextmanager
def instance(
    copy: Path, database_url: str, log: Path, settings: dict[str, str] | None = None
) -> Iterator[int]:
    """gunicorn as the Procfile runs it, from ``copy``, with 2 workers; its port."""
    port = free_port()
    env = {
        **os.environ,
        "NOMADS_DATABASE_URL": database_url,
        "NOMADS_MODEL_CHECK_SECONDS": CHECK_SECONDS,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        **(settings or {}),
    }
    env.pop("NOMADS_MODEL_DIR", None)
    with log.open("w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "app_cluster:app", "--bind", f"127.0.0.1:{port}"],
            cwd=copy, env=env, stdout=output, stderr=output,
        )  # fmt: skip
        try:
            try:
                wait_until_healthy(port, seconds=60, server=server)
            except RuntimeError as error:
                pytest.fail(f"the instance in {copy} did not start ({error}): {log.read_text()}")
            yield port
        finally:
            server.terminate()
            server.wait(timeout=30)
