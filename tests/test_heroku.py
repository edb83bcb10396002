"""Heroku's build, as the Python buildpack does it: a fresh virtualenv with only
requirements.txt installed (serving's lock, not this package), then the Procfile's
commands from the repository's root. The release phase must succeed, or Heroku refuses
the deploy."""

import http.client
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys

import pytest
from conftest import variant_of
from helpers.live_server import REPO

from nomads_cluster.cli.service import TRAINING_PACKAGES
from nomads_cluster.store.engine import create_store_engine
from nomads_cluster.store.registry import ModelRegistry
from nomads_cluster.store.users import UserStore
from nomads_cluster.testing import free_port, wait_until_healthy


def procfile_commands() -> dict[str, str]:
    lines = (REPO / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


@pytest.fixture(scope="module")
def heroku_slug(tmp_path_factory):
    """The repository's tracked files and a virtualenv with requirements.txt alone."""
    root = tmp_path_factory.mktemp("heroku")
    slug = root / "app"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (slug / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, slug / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            venv / "bin" / "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            "requirements.txt",
        ],
        cwd=slug,
        check=True,
    )
    return slug, venv


def heroku_env(venv, database_url: str, **extra: str) -> dict[str, str]:
    """The dyno's environment: the venv's bin on PATH, DATABASE_URL from the add-on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOMADS_", "VIRTUAL_ENV"))}
    env.pop("PYTHONPATH", None)
    return {**env, "PATH": f"{venv / 'bin'}:{env['PATH']}", "DATABASE_URL": database_url, **extra}


def test_release_then_web_from_requirements_txt_alone(heroku_slug, tmp_path):
    slug, venv = heroku_slug
    database_url = f"sqlite:///{tmp_path / 'heroku.sqlite3'}"
    commands = procfile_commands()

    release = subprocess.run(
        ["sh", "-c", commands["release"]],
        cwd=slug,
        env=heroku_env(venv, database_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert release.returncode == 0, release.stderr
    assert release.stdout.startswith("database schema:")
    with sqlite3.connect(tmp_path / "heroku.sqlite3") as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert {"assignments", "assignment_history", "alembic_version"} <= tables

    port = free_port()
    env = heroku_env(venv, database_url, PORT=str(port))
    with (tmp_path / "web.log").open("w") as log:
        web = subprocess.Popen(
            ["sh", "-c", f"exec {commands['web']}"], cwd=slug, env=env, stdout=log, stderr=log
        )
        try:
            wait_until_healthy(port, server=web)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            body = json.dumps({"_id": "heroku-1", "interests": {"surf": True, "coffee": True}})
            connection.request("POST", "/cluster", body)
            response = connection.getresponse()
            answer = json.loads(response.read())
            connection.close()
        finally:
            web.terminate()
            web.wait(timeout=30)
    assert response.status == 200, (tmp_path / "web.log").read_text()
    assert answer["_id"] == "heroku-1"
    assert answer["cluster"] in range(1, 100)


@pytest.mark.parametrize(
    "command",
    [
        ["train"],
        ["assign", "users.csv", "-o", "out.csv"],
        ["import-model", "users.csv", "--out", "m"],
    ],
)
def test_serving_install_says_what_training_commands_need(heroku_slug, command):
    """requirements.txt serves only: the commands that need the training stack say
    which package is missing and what to install, in one line."""
    slug, venv = heroku_slug
    (slug / "users.csv").write_text("_id,surf\n1,1\n")
    run = subprocess.run(
        [venv / "bin" / "python", "-m", "nomads_cluster", *command],
        cwd=slug,
        env=heroku_env(venv, "sqlite://"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    missing = re.search(r"needs (\w+), one of the training packages", run.stderr)
    assert missing and missing.group(1) in TRAINING_PACKAGES, run.stderr
    assert "pip install 'nomads-cluster[train]'" in run.stderr
    assert "Traceback" not in run.stderr


def test_app_json_postdeploy_is_the_release_command():
    app = json.loads((REPO / "app.json").read_text())
    assert app["scripts"]["postdeploy"] == procfile_commands()["release"]


def test_an_installed_package_finds_the_model_where_it_runs(heroku_slug, tmp_path):
    """Installed, not run from the repository (a wheel, an image), the package is in
    site-packages: the default model directory is the working directory's model/."""
    slug, venv = heroku_slug
    target = tmp_path / "site-packages"
    subprocess.run(
        [
            venv / "bin" / "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
            str(target),
            str(slug),
        ],
        check=True,
        capture_output=True,
    )
    database_url = f"sqlite:///{tmp_path / 'installed.sqlite3'}"
    env = {**heroku_env(venv, database_url), "PYTHONPATH": str(target)}
    upgrade = subprocess.run(
        [venv / "bin" / "python", target / "bin" / "nomads-cluster", "db", "upgrade"],
        cwd=slug,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert upgrade.returncode == 0, upgrade.stderr
    where = subprocess.run(
        [
            venv / "bin" / "python",
            "-c",
            "import nomads_cluster.segmentation.model as m; print(m.__file__, m.DEFAULT_MODEL_DIR)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(target))  # the installed copy, not the repository's
    assert where[1] == str(tmp_path / "model")


def test_a_one_off_dyno_promotes_and_rolls_back_a_model_filed_from_a_laptop(
    heroku_slug, tmp_path, committed
):
    """`heroku run python -m nomads_cluster ...`: the registry's commands need only the
    serving install and DATABASE_URL."""

    slug, venv = heroku_slug
    database_url = f"sqlite:///{tmp_path / 'heroku.sqlite3'}"

    def dyno(*arguments: str) -> str:
        run = subprocess.run(
            [venv / "bin" / "python", "-m", "nomads_cluster", *arguments],
            cwd=slug,
            env=heroku_env(venv, database_url),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        return run.stdout

    dyno("db", "upgrade")  # the release phase
    laptop = ModelRegistry(UserStore(create_store_engine(database_url, timeout=5)))
    candidate = variant_of(committed, "c0ffee000001")
    laptop.file(candidate, "data scientist")
    listed = json.loads(dyno("models", "--json"))
    assert [(v["version"], v["served"]) for v in listed] == [
        (committed.version, True),
        (candidate.version, False),
    ]
    assert f"served model: {candidate.version}" in dyno("promote", candidate.version)
    assert laptop.served() == candidate.version
    assert f"served model: {committed.version}" in dyno("rollback")
    assert laptop.served() == committed.version
    laptop.store.engine.dispose()
