"""The registry's commands: train and import-model file candidates (never the committed
model/), models lists them, shadow, promote and rollback act on the fleet, and
reassign and assign --store use the version the fleet serves."""

import json

import pytest
from conftest import variant_of

from nomads_cluster.cli import main
from nomads_cluster.segmentation.interests import encode_interests
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, sha256_of
from nomads_cluster.store.records import Assignment


@pytest.fixture
def cli(runner, database_url, monkeypatch):
    """The command line on the test database, after the release phase's upgrade."""
    monkeypatch.setenv("NOMADS_DATABASE_URL", database_url)

    def invoke(*arguments: str, code: int = 0) -> str:
        result = runner.invoke(main, list(arguments))
        assert result.exit_code == code, result.output
        return result.output

    invoke("db", "upgrade")
    return invoke


def listed(cli) -> dict[str, dict]:
    return {entry["version"]: entry for entry in json.loads(cli("models", "--json"))}


def test_train_files_a_candidate_and_leaves_the_committed_model_alone(cli, survey_path, committed):
    pickle_before = sha256_of(DEFAULT_MODEL_DIR / "model.pkl")
    output = cli("train", "--data", str(survey_path), "--warm-start")
    assert f"warm start from {committed.version}" in output  # the served version
    versions = listed(cli)
    (candidate,) = [v for v in versions if v != committed.version]
    assert f"filed {candidate} in the registry: nobody serves it yet" in output
    assert versions[candidate]["served"] is False and versions[committed.version]["served"]
    assert {"version", "created_at", "served"} <= versions[candidate].keys()
    assert sha256_of(DEFAULT_MODEL_DIR / "model.pkl") == pickle_before
    # A cold fit of the same survey is the committed model again: filed already.
    again = cli("train", "--data", str(survey_path))
    assert f"filed {committed.version} in the registry (filed already)" in again
    assert "continues segment 1 (1.00)" in again


def test_import_model_files_a_pickle_trained_elsewhere(cli, committed):
    output = cli("import-model", str(DEFAULT_MODEL_DIR / "model.pkl"))
    assert f"filed {committed.version} in the registry (filed already)" in output
    assert list(listed(cli)) == [committed.version]


def test_shadow_promote_and_rollback_from_the_command_line(cli, app, committed):
    candidate = variant_of(committed, "c0ffee000001")
    app.extensions["model_registry"].file(candidate, "tests")
    assert "give a VERSION to shadow, or --off" in cli("shadow", code=2)
    assert "is the served version" in cli("shadow", committed.version, code=1)
    assert f"shadowing {candidate.version}" in cli("shadow", candidate.version)
    assert listed(cli)[candidate.version]["shadow"]["shadowing"] is True
    text = cli("models")
    assert f"* {committed.version}" in text and "disagreed on 0.0% of 0 live requests" in text
    promoted = cli("promote", candidate.version)
    assert f"served model: {candidate.version} (was {committed.version})" in promoted
    assert "live: disagreed on 0.0% of 0 live requests since" in promoted
    assert "is served already" in cli("promote", candidate.version, code=1)
    assert listed(cli)[candidate.version]["served"] is True
    assert f"served model: {committed.version} (rolled back from {candidate.version})" in cli(
        "rollback"
    )
    assert "nothing to roll back to" in cli("rollback", code=1)
    assert listed(cli)[candidate.version]["shadow"]["shadowing"] is False  # promoted: ended
    assert f"shadowing {candidate.version}" in cli("shadow", candidate.version)
    assert f"stopped shadowing {candidate.version}" in cli("shadow", "--off")
    assert "no version was shadowed" in cli("shadow", "--off")
    assert "not a model version" in cli("promote", "../model", code=2)
    assert "no version 0123456789ab in the registry" in cli("promote", "0123456789ab", code=1)


def test_reassign_uses_the_version_the_fleet_serves_and_says_so(cli, app, store, committed):
    candidate = variant_of(committed, "c0ffee000001")
    app.extensions["model_registry"].file(candidate, "tests")
    user = Assignment(
        user_id="r1",
        interests=("surf", "coffee"),
        cluster=1,
        scores={},
        model_version="0ld0ld0ld0ld",
    )
    store.assignments.save([user])
    cli("promote", candidate.version)
    output = cli("reassign")
    assert f"reassigning with model {candidate.version}, the version the fleet serves" in output
    expected, _ = candidate.assign_user(encode_interests(dict.fromkeys(user.interests, True)))
    stored = store.assignments.current("r1")
    assert (stored.model_version, stored.cluster) == (candidate.version, expected)
