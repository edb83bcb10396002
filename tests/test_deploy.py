"""Deployment files: Heroku's app.json and Procfile, the Dockerfile, docker-compose.yml
and its nginx configuration, read. (`make containers` builds the image and runs the
stack with podman.)"""

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml
from helpers.live_server import REPO


def test_heroku_app_json_provisions_postgresql_and_a_key():
    app = json.loads((REPO / "app.json").read_text())
    assert any(addon["plan"].startswith("heroku-postgresql") for addon in app["addons"])
    assert app["env"]["NOMADS_API_KEY"]["generator"] == "secret"
    assert app["env"]["NOMADS_READ_API_KEY"]["generator"] == "secret"
    assert app["env"]["NOMADS_TRUSTED_PROXIES"]["value"] == "1"  # Heroku's router


def test_one_python_version_for_heroku_and_the_image():
    """Heroku's buildpack reads .python-version (runtime.txt is deprecated); a major
    version takes its latest patch release. The image's base names the same one."""
    version = (REPO / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.\d+", version)
    assert not (REPO / "runtime.txt").exists()
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(rf"^ARG BASE=python:{re.escape(version)}-slim$", dockerfile, re.M)


def test_procfile_serves_with_gunicorn_conf_and_migrates_on_release():
    procfile = dict(
        line.split(": ", 1) for line in (REPO / "Procfile").read_text().splitlines() if line
    )
    assert procfile["web"] == "gunicorn app_cluster:app"  # settings: gunicorn.conf.py
    assert procfile["release"] == "python -m nomads_cluster db upgrade"
    assert procfile["worker"] == "python -m nomads_cluster worker"


def test_the_worker_is_a_process_type_on_heroku_and_in_compose():
    app = json.loads((REPO / "app.json").read_text())
    assert app["formation"]["worker"]["quantity"] == 1
    assert {"NOMADS_WEBHOOK_URL", "NOMADS_WEBHOOK_SECRET"} <= app["env"].keys()
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    worker = compose["services"]["worker"]
    assert worker["command"] == ["python", "-m", "nomads_cluster", "worker"]
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_dockerfile_is_slim_non_root_with_a_health_check():
    lines = [
        line.strip()
        for line in (REPO / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    instructions = [line.split()[0] for line in lines]
    # Built by users on python:3.11-slim; CI builds the same steps on a base of its own.
    assert lines[:2] == ["ARG BASE=python:3.11-slim", "FROM ${BASE}"]
    assert instructions.index("USER") < instructions.index("CMD")
    user = next(line for line in lines if line.startswith("USER"))
    assert user.split()[1] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK") and "/health" in line for line in lines)
    for line in lines:
        if line.startswith("COPY"):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source


def test_compose_scales_the_app_behind_nginx_with_a_database_volume():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"db", "app", "nginx", "migrate"} <= set(services)
    assert "ports" not in services["app"]  # so `--scale app=3` has no port clash
    assert services["nginx"]["ports"] == ["8080:80"]
    assert "db-data" in compose["volumes"]
    assert services["db"]["volumes"][0].startswith("db-data:")
    assert "@db:5432/" in services["app"]["environment"]["DATABASE_URL"]
    assert services["app"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    mounted = services["nginx"]["volumes"][0].split(":")[0]
    assert (REPO / mounted).is_file()


def test_nginx_accepts_the_compose_configuration(tmp_path):
    if not shutil.which("nginx"):
        message = "nginx is not installed: `make test` installs Debian's nginx"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # As the nginx image fills the template: the environment's variables only.
    template = (REPO / "deploy/nginx-compose.conf.template").read_text()
    site = tmp_path / "default.conf"
    site.write_text(template.replace("${NGINX_LOCAL_RESOLVERS}", "127.0.0.11"))
    assert "${" not in site.read_text()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{ access_log off; include {site}; }}\n"
    )
    checked = subprocess.run(
        ["nginx", "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    assert re.search(r"test is successful", checked.stderr)
