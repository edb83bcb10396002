"""The Postman collection, run by newman against a live gunicorn: every endpoint, tested."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.live_server import REPO, run_gunicorn

from nomads_cluster.web.operations import OPERATIONS

COLLECTION = REPO / "postman" / "nomads-cluster.postman_collection.json"
NEWMAN = REPO / "node_modules" / ".bin" / "newman"
KEYS = {"apiKey": "postman-key-0123456789", "readApiKey": "postman-read-key-0123456789"}


@pytest.fixture(scope="module")
def newman() -> Path:
    if not NEWMAN.exists() or not shutil.which("node"):
        message = "newman is not installed: `make test` installs it (npm ci)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return NEWMAN


@pytest.fixture
def base_url(tmp_path):
    env = {
        "NOMADS_DATABASE_URL": f"sqlite:///{tmp_path}/nomads.sqlite3",
        "NOMADS_API_KEY": KEYS["apiKey"],
        "NOMADS_READ_API_KEY": KEYS["readApiKey"],
    }
    with run_gunicorn(env, tmp_path / "gunicorn.log") as port:
        yield f"http://127.0.0.1:{port}"


def run_collection(newman: Path, base_url: str, keys: dict[str, str], report: Path) -> dict:
    variables = [f"{name}={value}" for name, value in {"baseUrl": base_url, **keys}.items()]
    command = [
        str(newman),
        "run",
        str(COLLECTION),
        "--reporters",
        "cli,json",
        "--reporter-json-export",
        str(report),
        "--color",
        "off",
    ]
    command += [argument for variable in variables for argument in ("--env-var", variable)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    summary = json.loads(report.read_text())["run"]
    summary["returncode"], summary["output"] = finished.returncode, finished.stdout
    return summary


def test_collection_covers_every_documented_operation():
    collection = json.loads(COLLECTION.read_text())
    requested = set()
    for item in collection["item"]:
        # Postman's path variables (":user_id") are OpenAPI's ("{user_id}").
        path = [re.sub(r"^:(.+)$", r"{\1}", part) for part in item["request"]["url"]["path"]]
        requested.add((item["request"]["method"].lower(), "/" + "/".join(path)))
        tests = [e["script"]["exec"] for e in item["event"] if e["listen"] == "test"]
        assert any("pm.test(" in line for lines in tests for line in lines), item["name"]
    assert {(op.method, op.path) for op in OPERATIONS} <= requested
    variables = {v["key"] for v in collection["variable"]}
    assert {"baseUrl", *KEYS} <= variables


def test_newman_runs_the_collection_green(newman, base_url, tmp_path):
    run = run_collection(newman, base_url, KEYS, tmp_path / "report.json")
    assert run["returncode"] == 0, run["output"]
    stats = run["stats"]
    n_items = len(json.loads(COLLECTION.read_text())["item"])
    assert stats["requests"]["total"] == n_items and stats["requests"]["failed"] == 0
    assert stats["assertions"]["total"] >= n_items and stats["assertions"]["failed"] == 0


def test_collections_tests_catch_a_wrong_answer(newman, base_url, tmp_path):
    # With wrong keys the reads and the erasure are refused, and the collection says where.
    wrong = dict.fromkeys(KEYS, "not-the-key")
    run = run_collection(newman, base_url, wrong, tmp_path / "report.json")
    assert run["returncode"] != 0
    failed = {failure["source"]["name"] for failure in run["failures"]}
    assert {"A user's assignment", "Erase a user", "Erased user"} <= failed
