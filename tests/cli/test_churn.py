"""`nomads-cluster churn` and `promote --max-churn`: how many stored users a candidate
would move, equal to brute force, measured without writing to the store."""

import json
from collections import Counter

import numpy as np
import pytest
import sqlalchemy as sa

from nomads_cluster.cli import main
from nomads_cluster.segmentation.interests import INTEREST_KEYS, encode_interests
from nomads_cluster.store import churn
from nomads_cluster.store.records import Assignment
from nomads_cluster.store.tables import assignment_history

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
    store.assignments.save(users)
    return users


def brute_force_moves(users: list[Assignment], model) -> Counter:
    return Counter(
        (user.cluster, model.assign_user(encode_interests(dict.fromkeys(user.interests, True)))[0])
        for user in users
    )


def test_churn_equals_brute_force_chunk_by_chunk(store, stored, committed):
    chunks = []
    report = churn.measure_churn(store, committed, chunk_users=7, on_chunk=chunks.append)
    assert report.moves == brute_force_moves(stored, committed)
    assert sum(chunks) == report.users == N_USERS and max(chunks) == 7
    changed = sum(n for (old, new), n in report.moves.items() if old != new)
    assert report.share == changed / N_USERS
    for segment, (users, stay) in report.staying().items():
        assert users == sum(1 for u in stored if u.cluster == segment)
        assert stay == report.moves[segment, segment]


def test_the_churn_command_prints_the_figures_and_keeps_them_in_the_registry(
    runner, store, stored, candidate, database_url, monkeypatch
):
    monkeypatch.setenv("NOMADS_DATABASE_URL", database_url)
    with store.engine.connect() as conn:
        history = conn.execute(sa.select(sa.func.count()).select_from(assignment_history)).scalar()
    result = runner.invoke(main, ["churn", candidate.version])
    assert result.exit_code == 0, result.output
    moves = brute_force_moves(stored, candidate)
    changed = sum(n for (old, new), n in moves.items() if old != new)
    assert f"{changed / N_USERS:.1%} of the {N_USERS} stored users would change segment" in (
        result.stdout
    )
    listed = runner.invoke(main, ["models", "--json"])
    (entry,) = [v for v in json.loads(listed.stdout) if v["version"] == candidate.version]
    assert entry["churn"]["changed"] == changed and entry["churn"]["users"] == N_USERS
    with store.engine.connect() as conn:  # nothing written to the users
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(assignment_history)).scalar()
            == history
        )


def test_promote_refuses_a_candidate_above_max_churn_and_takes_one_below(
    runner, store, stored, candidate, database_url, monkeypatch
):
    monkeypatch.setenv("NOMADS_DATABASE_URL", database_url)
    moves = brute_force_moves(stored, candidate)
    share = sum(n for (old, new), n in moves.items() if old != new) / N_USERS
    version = candidate.version
    refused = runner.invoke(main, ["promote", version, "--max-churn", f"{share - 0.01:.4f}"])
    assert refused.exit_code == 1
    assert f"refusing to promote {version}: it would move {share:.1%}" in refused.output
    accepted = runner.invoke(main, ["promote", version, "--max-churn", f"{share + 0.01:.4f}"])
    assert accepted.exit_code == 0, accepted.output
    assert f"{share:.1%} of the {N_USERS} stored users would change segment" in accepted.stdout
    assert f"served model: {version}" in accepted.stdout
