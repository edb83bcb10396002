"""`nomads-cluster reassign`: every stored user re-scored by the current model, resumably."""

from collections import Counter

import numpy as np
import pytest

from nomads_cluster.cli import main
from nomads_cluster.segmentation.interests import INTEREST_KEYS, encode_interests
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, load_model
from nomads_cluster.store.engine import StoreUnavailable
from nomads_cluster.store.lifecycle import Lifecycle
from nomads_cluster.store.records import Assignment

N_USERS = 230


@pytest.fixture
def model():
    return load_model(DEFAULT_MODEL_DIR)


@pytest.fixture
def old_users(store) -> list[Assignment]:
    """Users stored by an older model: segment 1 for everybody, whatever they chose."""
    rng = np.random.default_rng(11)
    users = [
        Assignment(
            user_id=f"user-{i:04d}" if i % 3 else i,
            interests=tuple(k for k in INTEREST_KEYS if rng.random() < 0.3),
            cluster=1,
            scores={"1": 1.0, "2": 0.0, "3": 0.0, "4": 0.0},
            model_version="0ld0ld0ld0ld",
            source="api",
        )
        for i in range(N_USERS)
    ]
    store.assignments.save(users)
    return users


@pytest.fixture
def run(runner, database_url, monkeypatch):
    monkeypatch.setenv("NOMADS_DATABASE_URL", database_url)
    return lambda *args: runner.invoke(main, ["reassign", *args])


def test_every_user_gets_the_current_models_segment_in_their_history(run, store, old_users, model):
    result = run("--batch-size", "100")
    assert result.exit_code == 0, result.output
    expected = {}
    for user in old_users:
        segment, scores = model.assign_user(encode_interests(dict.fromkeys(user.interests, True)))
        expected[user.user_id] = segment
        current = store.assignments.current(str(user.user_id))
        assert current.model_version == model.version and current.source == "reassign"
        assert current.cluster == segment and current.interests == user.interests
        assert current.scores == pytest.approx(model.scores_by_number(scores))
        assert current.user_id == user.user_id  # integer ids stay integers
        history = store.assignments.history(str(user.user_id), 10)
        assert [h.source for h in history] == ["reassign", "api"]
    changed = sum(segment != 1 for segment in expected.values())
    assert (
        f"reassigned {N_USERS} users to model {model.version}: {changed} changed" in result.output
    )
    for (old, new), count in Counter((1, s) for s in expected.values()).items():
        if old != new:
            assert f"segment {old} -> {new}: {count}" in result.output
    # Nothing left to do: a second run reassigns nobody.
    assert "reassigned 0 users" in run().output


def test_a_stopped_run_goes_on_where_it_stopped(run, store, old_users, monkeypatch):
    replace = Lifecycle.replace_unchanged
    calls = []

    def fail_on_the_third_batch(self, changes):
        calls.append(len(changes))
        if len(calls) == 3:
            raise StoreUnavailable("the database is unavailable (test)")
        return replace(self, changes)

    monkeypatch.setattr(Lifecycle, "replace_unchanged", fail_on_the_third_batch)
    stopped = run("--batch-size", "50")
    assert stopped.exit_code == 1
    assert "run reassign again to go on" in stopped.output
    done = [u for u in old_users if store.assignments.current(str(u.user_id)).source == "reassign"]
    assert len(done) == 100  # the two batches before the failure were committed

    monkeypatch.setattr(Lifecycle, "replace_unchanged", replace)
    resumed = run("--batch-size", "50")
    assert resumed.exit_code == 0, resumed.output
    assert f"reassigned {N_USERS - 100} users" in resumed.output
    for user in old_users:
        sources = [h.source for h in store.assignments.history(str(user.user_id), 10)]
        assert sources == ["reassign", "api"]  # once each, never twice


def test_a_user_assigned_again_meanwhile_is_left_alone(store, old_users, model):
    read = store.assignments.current(str(old_users[0].user_id))
    fresh = Assignment(
        user_id=read.user_id,
        interests=("surf",),
        cluster=2,
        scores={"1": 0.0, "2": 0.5, "3": 0.0, "4": 0.0},
        model_version=model.version,
        source="api",
    )
    store.assignments.save([fresh])  # the app posted the user after reassign read them
    stale_result = Assignment(
        user_id=read.user_id,
        interests=read.interests,
        cluster=3,
        scores={"1": 0.0, "2": 0.0, "3": 0.5, "4": 0.0},
        model_version=model.version,
        source="reassign",
    )
    assert store.lifecycle.replace_unchanged([(read, stale_result)]) == []
    assert store.assignments.current(str(read.user_id)).source == "api"
    assert [h.source for h in store.assignments.history(str(read.user_id), 10)] == ["api", "api"]
