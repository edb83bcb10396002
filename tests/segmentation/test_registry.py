"""Model versions in a registry: promote one, and servers switch to it without a miss."""

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers.live_server import REPO, run_gunicorn

from nomads_cluster.segmentation.interests import INTEREST_KEYS, encode_interests
from nomads_cluster.segmentation.model import (
    CURRENT_FILE,
    DEFAULT_MODEL_DIR,
    ModelError,
    load_model,
    promote,
)
from nomads_cluster.segmentation.survey import Survey, read_survey
from nomads_cluster.segmentation.training import train

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def two_versions(survey_path, tmp_path_factory) -> tuple[Path, str, str]:
    """A registry holding the committed model (A) and one retrained on a resample (B)."""
    registry = tmp_path_factory.mktemp("template")
    committed = load_model(DEFAULT_MODEL_DIR)
    shutil.copytree(DEFAULT_MODEL_DIR, registry / committed.version)
    survey = read_survey(survey_path)
    rows = np.random.default_rng(5).integers(0, survey.n_rows, survey.n_rows)
    resampled = Survey(features=survey.features[rows], sha256="resample", source="resample")
    card = train(resampled, registry / "incoming", previous=committed)
    (registry / "incoming").rename(registry / card["version"])
    assert card["version"] != committed.version
    return registry, committed.version, card["version"]


@pytest.fixture
def registry(two_versions, tmp_path) -> tuple[Path, str, str]:
    template, a, b = two_versions
    path = Path(shutil.copytree(template, tmp_path / "models"))
    promote(path, a)
    return path, a, b


@pytest.fixture
def database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/nomads.sqlite3"


def version_of(client) -> str:
    return client.post("/cluster", json={"_id": 1, "interests": {"surf": True}}).get_json()[
        "model_version"
    ]


def test_promote_checks_the_model_and_replaces_current(registry):
    path, a, b = registry
    assert promote(path, b) == a
    assert (path / CURRENT_FILE).read_text().strip() == b
    with pytest.raises(ModelError, match="not a model version"):
        promote(path, "../model")
    (path / a / "model.pkl").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="refusing to unpickle"):
        promote(path, a)
    assert (path / CURRENT_FILE).read_text().strip() == b  # unchanged


def test_promote_of_an_unknown_version_lists_those_there_are(registry, runner):
    path, a, b = registry
    with pytest.raises(ModelError, match="has no version 0123456789ab; versions there") as refused:
        promote(path, "0123456789ab")
    assert sorted([a, b]) == str(refused.value).rsplit(": ", 1)[1].split(", ")
    from nomads_cluster.cli import main

    result = runner.invoke(main, ["promote", "0123456789ab", "--registry", str(path)])
    assert result.exit_code == 1
    assert "Errno" not in result.output and "versions there:" in result.output


def test_promote_help_names_its_variable_once(runner):
    from nomads_cluster.cli import main

    help_text = runner.invoke(main, ["promote", "--help"]).output
    assert "env var: NOMADS_MODEL_DIR" in help_text
    assert "default" not in help_text


def test_a_worker_follows_promotions(make_app, config_for, database_url, registry, caplog):
    path, a, b = registry
    app = make_app(config_for(database_url, MODEL_DIR=str(path), MODEL_CHECK_SECONDS=0))
    client = app.test_client()
    assert version_of(client) == a
    promote(path, b)
    assert version_of(client) == b
    assert client.get("/version").get_json()["version"] == b
    assert client.get("/health").get_json()["model_version"] == b
    # A broken version named by hand: logged, and the served model stays.
    (path / a / "model.pkl").write_bytes(b"broken")
    (path / CURRENT_FILE).write_text(a)
    with caplog.at_level(logging.ERROR, logger="nomads_cluster.segmentation.model"):
        assert version_of(client) == b
    assert f"keeping model {b}" in caplog.text


def test_admin_reload_switches_at_once(make_app, config_for, database_url, registry):
    path, a, b = registry
    app = make_app(config_for(database_url, MODEL_DIR=str(path), MODEL_CHECK_SECONDS=3600))
    client = app.test_client()
    promote(path, b)
    assert version_of(client) == a  # not checked again for an hour...
    assert client.post("/admin/model/reload").status_code == 401
    reloaded = client.post(
        "/admin/model/reload", headers={"Authorization": "Bearer test-key-0123456789"}
    )
    assert reloaded.get_json() == {"model_version": b}
    assert version_of(client) == b  # ...but reloaded on demand


def test_admin_reload_is_off_without_an_api_key(make_app, config_for, database_url, registry):
    path, _, _ = registry
    app = make_app(config_for(database_url, MODEL_DIR=str(path), API_KEY=None))
    response = app.test_client().post("/admin/model/reload", headers={"Authorization": "Bearer x"})
    assert response.status_code == 403


def test_train_files_a_version_and_promote_serves_it(runner, survey_path, tmp_path, monkeypatch):
    from nomads_cluster.cli import main

    monkeypatch.setenv("NOMADS_DATABASE_URL", f"sqlite:///{tmp_path}/store.sqlite3")
    registry = tmp_path / "models"
    arguments = ["train", "--data", str(survey_path), "--registry", str(registry)]
    trained = runner.invoke(main, arguments)
    assert trained.exit_code == 0, trained.output
    (version,) = [p.name for p in registry.iterdir()]
    assert f"nomads-cluster promote {version} --registry {registry}" in trained.output
    promoted = runner.invoke(main, ["promote", version], env={"NOMADS_MODEL_DIR": str(registry)})
    assert promoted.exit_code == 0, promoted.output
    assert promoted.stdout.endswith(f"current model: {version} (was none)\n")
    # Training again into the registry numbers against its current model.
    again = runner.invoke(main, arguments)
    assert "continues segment 1 (1.00)" in again.output


def post(port: int, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/cluster", json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except OSError as exc:
        return getattr(exc, "code", 0), {"error": str(exc)}


def test_promotion_under_load_drops_no_request(registry, tmp_path):
    path, a, b = registry
    env = {
        "NOMADS_DATABASE_URL": f"sqlite:///{tmp_path}/load.sqlite3",
        "NOMADS_MODEL_DIR": str(path),
        "NOMADS_MODEL_CHECK_SECONDS": "0.2",
    }
    rng = np.random.default_rng(7)
    users = [
        {"_id": f"u{i}", "interests": {k: True for k in INTEREST_KEYS if rng.random() < 0.3}}
        for i in range(200)
    ]
    answers: list[tuple[int, dict, dict]] = []
    promoted, promoted_at = threading.Event(), [0.0]
    with run_gunicorn(env, tmp_path / "gunicorn.log") as port:

        def client(offset: int) -> None:
            # Until well after the promotion (ten check intervals), so that every
            # worker has switched by the last answers.
            sent = 0
            while not promoted.is_set() or time.monotonic() < promoted_at[0] + 2:
                user = users[(offset + sent) % len(users)]
                status, answer = post(port, user)
                answers.append((status, answer, user))
                sent += 1

        threads = [threading.Thread(target=client, args=(n * 50,)) for n in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        subprocess.run(
            [Path(sys.executable).parent / "nomads-cluster", "promote", b, "--registry", path],
            cwd=REPO,
            env={**os.environ, **env},  # the churn it prints is the served store's
            check=True,
            capture_output=True,
        )
        promoted_at[0] = time.monotonic()
        promoted.set()
        for thread in threads:
            thread.join()

    assert [s for s, _, _ in answers if s != 200] == []
    versions = [answer["model_version"] for _, answer, _ in answers]
    assert set(versions) == {a, b}
    assert versions[-40:] == [b] * 40  # every worker switched
    models = {a: load_model(path / a), b: load_model(path / b)}
    for _, answer, user in answers:
        expected, _ = models[answer["model_version"]].assign_user(
            encode_interests(user["interests"])
        )
        assert answer["cluster"] == expected
