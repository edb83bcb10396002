"""Instances of the service as a fleet runs them: each from a copy of the repository of
its own (two dynos of one slug), gunicorn as the Procfile starts it."""

import shutil
import subprocess
from contextlib import AbstractContextManager
from pathlib import Path

from .live_server import REPO, run_gunicorn

CHECK_SECONDS = "1"  # each worker's poll of the model registry


def copy_of_repository(target: Path) -> Path:
    """The repository's files as a deploy has them (tracked and new, none ignored), in
    a git repository of their own, so that any change to them shows."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
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
        cwd=copy,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def instance(
    copy: Path, database_url: str, log: Path, settings: dict[str, str] | None = None
) -> AbstractContextManager[int]:
    """gunicorn as the Procfile runs it, from ``copy``, with 2 workers; its port."""
    env = {
        "NOMADS_DATABASE_URL": database_url,
        "NOMADS_MODEL_CHECK_SECONDS": CHECK_SECONDS,
        "PYTHONDONTWRITEBYTECODE": "1",
        **(settings or {}),
    }
    return run_gunicorn(env, log, workers=2, cwd=copy)
