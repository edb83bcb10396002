"""The locks: complete, hashed, made from pyproject.toml by `make lock`, and current."""

import re
import shutil
import subprocess
import tomllib

import pytest
from helpers.live_server import REPO

from nomads_cluster.cli.service import TRAINING_PACKAGES

LOCKS = [
    "requirements.txt",
    "requirements-run.txt",
    "requirements-train.txt",
    "requirements-dev.txt",
]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$", re.M)


def pinned(lock: str) -> dict[str, str]:
    text = (REPO / lock).read_text()
    return {re.sub(r"[-_.]+", "-", name.lower()): version for name, version in PIN.findall(text)}


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_of_a_lock_has_its_hashes(lock):
    text = (REPO / lock).read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2].strip())
    assert len(entries) == len(pinned(lock)) > 0
    assert all("--hash=sha256:" in entry for entry in entries)


def test_serving_installs_no_training_package():
    serving, training = pinned("requirements.txt"), pinned("requirements-train.txt")
    distributions = {"sklearn": "scikit-learn"}
    for package in TRAINING_PACKAGES:
        name = distributions.get(package, package)
        assert name not in serving and name in training, name
    # What serves is pinned alike everywhere: a lock never moves a serving package.
    for lock in ("requirements-run.txt", "requirements-train.txt", "requirements-dev.txt"):
        assert {name: pinned(lock)[name] for name in serving} == serving


def test_each_extra_of_pyproject_has_its_lock():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert set(project["optional-dependencies"]) == {"run", "train", "dev"}
    makefile = (REPO / "Makefile").read_text()
    for lock in LOCKS:
        assert f"-o $(LOCK_DIR)/{lock}" in makefile


def test_the_locks_are_what_make_lock_makes_of_pyproject(tmp_path):
    """A dependency added to pyproject.toml, or a pin edited by hand, without `make
    lock`: stale. The committed pins are kept as uv's preferences, so only such a
    change, not a new release on PyPI, makes a difference."""
    if not (REPO / ".venv" / "bin" / "uv").exists():
        pytest.skip("uv is not installed: make install")
    for lock in LOCKS:
        shutil.copy(REPO / lock, tmp_path / lock)
    made = subprocess.run(
        ["make", "--no-print-directory", "lock", f"LOCK_DIR={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr
    for lock in LOCKS:
        assert (tmp_path / lock).read_text() == (REPO / lock).read_text(), (
            f"{lock} is stale: run `make lock` and commit it"
        )
