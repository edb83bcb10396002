"""`nomads-cluster churn` and `promote --max-churn`: how many stored users a candidate
would move, equal to brute force, measured without writing to the store."""

import json
import shutil
from collections import Counter

import numpy as np
import pytest
import sqlalchemy as sa

from nomads_cluster.cli import main
from nomads_cluster.segmentation.interests import INTEREST_KEYS, encode_interests
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, load_model
from nomads_cluster.store import churn
from nomads_cluster.store.tables import assignment_history
from nomads_cluster.store.users import Assignment

N_USERS = 300


@pytest.fixture
def stored(store) -> list[Assignment]:
    """Users told random segments (as if by another model), whatever they chose."""
    rng = np.random.default_rng(5)
    users = [
        Assignment(
            user_id=f"u{i}" if i % 2 else i,
            interests=tuple(k for k in INTEREST_KEYS if rng.random() < 0.35),
            cluster=int(rng.integers(1, 5)),
            scores={},
            model_version="0ld0ld0ld0ld",
        )
        for i in range(N_USERS)
    ]
    store.save(users)
    return users


@pytest.fixture
def candidate(tmp_path):
    """The committed model, copied where its card may be written."""
    directory = tmp_path / "candidate"
    shutil.copytree(DEFAULT_MODEL_DIR, directory)
    return directory


def brute_force_moves(users: list[Assignment], model) -> Counter:
    return Counter(
        (user.cluster, model.assign_user(encode_interests(dict.fromkeys(user.interests, True)))[0])
        for user in users
    )


def test_churn_equals_brute_force_chunk_by_chunk(store, stored, monkeypatch):
    monkeypatch.setattr(churn, "CHUNK_USERS", 7)  # many chunks, the last one short
    model = load_model(DEFAULT_MODEL_DIR)
    chunks = []
    report = churn.measure_churn(store, model, chunk_users=7, on_chunk=chunks.append)
    assert report.moves == brute_force_moves(stored, model)
    assert sum(chunks) == report.users == N_USERS and max(chunks) == 7
    changed = sum(n for (old, new), n in report.moves.items() if old != new)
    assert report.share == changed / N_USERS
    for segment, (users, stay) in report.staying().items():
        assert users == sum(1 for u in stored if u.cluster == segment)
        assert stay == report.moves[segment, segment]


def test_the_churn_command_prints_the_figures_and_writes_them_to_the_card(
    runner, store, stored, candidate, database_url, monkeypatch
):
    monkeypatch.setenv("NOMADS_DATABASE_URL", database_url)
    with store.engine.connect() as conn:
        history = conn.execute(sa.select(sa.func.count()).select_from(assignment_history)).scalar()
    result = runner.invoke(main, ["churn", str(candidate)])
    assert result.exit_code == 0, result.output
    moves = brute_force_moves(stored, load_model(candidate))
    changed = sum(n for (old, new), n in moves.items() if old != new)
    assert f"{changed / N_USERS:.1%} of the {N_USERS} stored users would change segment" in (
        result.stdout
    )
    card = json.loads((candidate / "model.json").read_text())
    assert card["churn"]["changed"] == changed and card["churn"]["users"] == N_USERS
    assert {(m["from"], m["to"]): m["users"] for m in card["churn"]["moves"]} == dict(moves)
    load_model(candidate)  # the card still loads with the model
    with store.engine.connect() as conn:  # nothing written to the store
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(assignment_history)).scalar()
            == history
        )


def test_promote_refuses_a_candidate_above_max_churn_and_takes_one_below(
    runner, store, stored, tmp_path, database_url, monkeypatch
):
    monkeypatch.setenv("NOMADS_DATABASE_URL", database_url)
    registry = tmp_path / "models"
    version = load_model(DEFAULT_MODEL_DIR).version
    shutil.copytree(DEFAULT_MODEL_DIR, registry / version)
    (registry / "CURRENT").write_text(version + "\n")
    moves = brute_force_moves(stored, load_model(DEFAULT_MODEL_DIR))
    share = sum(n for (old, new), n in moves.items() if old != new) / N_USERS
    refused = runner.invoke(main, ["promote", version, "--registry", str(registry),
                                   "--max-churn", f"{share - 0.01:.4f}"])  # fmt: skip
    assert refused.exit_code == 1
    assert f"refusing to promote {version}: it would move {share:.1%}" in refused.output
    accepted = runner.invoke(main, ["promote", version, "--registry", str(registry),
                                    "--max-churn", f"{share + 0.01:.4f}"])  # fmt: skip
    assert accepted.exit_code == 0, accepted.output
    assert f"{share:.1%} of the {N_USERS} stored users would change segment" in accepted.stdout
    assert f"current model: {version}" in accepted.stdout
