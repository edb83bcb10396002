"""The model registry in the database: versions filed as numbers and never altered,
promotions and rollbacks, the first version of a fresh database, shadows and churn."""

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import variant_of

from nomads_cluster import configured_app
from nomads_cluster.segmentation.interests import INTEREST_KEYS
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR
from nomads_cluster.store.engine import create_store_engine
from nomads_cluster.store.migrations import upgrade
from nomads_cluster.store.registry import ModelRegistry, RegistryError
from nomads_cluster.store.tables import model_promotions, model_versions
from nomads_cluster.store.users import open_store


@pytest.fixture
def registry(app) -> ModelRegistry:
    return app.extensions["model_registry"]


def test_a_fresh_database_serves_the_committed_model(registry, committed):
    assert registry.served() == committed.version
    (only,) = registry.versions()
    assert (only.version, only.served, only.segments) == (committed.version, True, 4)


def test_a_filed_version_scores_exactly_as_its_pickle(registry, committed):
    """The profiles are filed as numbers and come back bit for bit: the registry's
    model answers every user as the committed model.pkl does (make verify's scorer)."""
    served = registry.load(committed.version)
    assert np.array_equal(served.profiles, committed.profiles)
    users = (np.random.default_rng(3).random((2000, len(INTEREST_KEYS))) < 0.3).astype(float)
    segments, scores = served.assign_users(users)
    expected_segments, expected_scores = committed.assign_users(users)
    assert np.array_equal(segments, expected_segments)
    assert np.array_equal(scores, expected_scores)
    assert served.card == committed.card
    assert served.heatmap_png == (DEFAULT_MODEL_DIR / "heatmap.png").read_bytes()


def test_filing_again_is_a_no_op_and_other_parameters_under_a_version_are_refused(
    registry, committed
):
    assert registry.file(committed, "tests") is False
    impostor = variant_of(committed, committed.version)
    with pytest.raises(RegistryError, match="filed already with other profiles"):
        registry.file(impostor, "tests")


def test_a_filed_version_cannot_be_altered(registry, store, committed):
    with store.engine.begin() as conn, pytest.raises(sa.exc.DBAPIError, match="cannot be altered"):
        conn.execute(
            model_versions.update()
            .where(model_versions.c.version == committed.version)
            .values(filed_by="someone else")
        )
    assert registry.versions()[0].filed_by != "someone else"


def test_a_version_whose_parameters_were_changed_is_refused_at_load(registry, store, committed):
    """Written around the trigger (a restored dump, a hand-made row): the checksum
    still tells."""
    card = json.loads(committed.card.model_dump_json(exclude_unset=True))
    card["version"] = "bad0bad0bad0"
    row = registry.store.run(
        lambda conn: conn.execute(
            sa.select(model_versions).where(model_versions.c.version == committed.version)
        ).one(),
        write=False,
    )
    profiles = [[value * 2 for value in profile] for profile in row.profiles]
    with store.engine.begin() as conn:
        conn.execute(
            model_versions.insert().values(
                **{**row._asdict(), "version": "bad0bad0bad0", "card": card, "profiles": profiles}
            )
        )
    with pytest.raises(RegistryError, match="do not match their checksum"):
        registry.load("bad0bad0bad0")
    with pytest.raises(RegistryError, match="do not match their checksum"):
        registry.promote("bad0bad0bad0", "tests")
    assert registry.served() == committed.version


def test_promote_and_rollback_step_through_the_versions_served(registry, committed):
    a = committed.version
    b, c = (variant_of(committed, v) for v in ("b0b0b0b0b0b0", "c0c0c0c0c0c0"))
    for model in (b, c):
        registry.file(model, "tests")
    assert registry.promote(b.version, "tests") == a
    assert registry.promote(c.version, "tests") == b.version
    assert registry.rollback("tests") == (b.version, c.version)
    assert registry.served() == b.version
    assert registry.rollback("tests") == (a, b.version)
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback("tests")
    assert registry.served() == a
    with pytest.raises(RegistryError, match="is served already"):
        registry.promote(a, "tests")
    with pytest.raises(RegistryError, match="no version 0123456789ab in the registry"):
        registry.promote("0123456789ab", "tests")
    actions = registry.store.run(
        lambda conn: (
            conn.execute(sa.select(model_promotions.c.action).order_by(model_promotions.c.id))
            .scalars()
            .all()
        ),
        write=False,
    )
    assert actions == ["first", "promote", "promote", "rollback", "rollback"]


def test_processes_starting_at_once_on_an_empty_database_serve_one_first_version(
    config_for, database_url, tmp_path, committed
):
    config = configured_app(config_for(database_url)).config

    def start() -> str | None:
        store = open_store(config, str(tmp_path))
        try:
            return ModelRegistry(store).serve_first(DEFAULT_MODEL_DIR)
        finally:
            store.engine.dispose()

    with ThreadPoolExecutor(4) as pool:
        firsts = list(pool.map(lambda _: start(), range(4)))
    assert sorted(firsts, key=lambda first: first or "") == [None, None, None, committed.version]
    store = open_store(config, str(tmp_path))
    try:
        count = store.run(
            lambda conn: conn.execute(sa.select(sa.func.count()).select_from(model_promotions)),
            write=False,
        ).scalar_one()
    finally:
        store.engine.dispose()
    assert count == 1


def test_a_database_behind_the_registrys_revision_says_to_upgrade(config_for, tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    upgrade(create_store_engine(url, timeout=5), "0004")
    store = open_store(configured_app(config_for(url)).config, str(tmp_path))
    with pytest.raises(RegistryError, match="revision 0004, which has no model registry: run"):
        ModelRegistry(store)


def test_shadow_agreement_sums_what_every_process_adds(registry, candidate, committed):
    registry.start_shadow(candidate.version)
    assert registry.following() == (committed.version, candidate.version)
    served = committed.version
    registry.add_agreement(
        {(candidate.version, served, 1, 1): 3, (candidate.version, served, 1, 2): 1}
    )
    registry.add_agreement({(candidate.version, served, 1, 2): 4})
    agreement = registry.agreement(candidate.version)
    assert dict(agreement.pairs) == {(1, 1): 3, (1, 2): 5}
    assert (agreement.requests, agreement.disagreed, agreement.shadowing) == (8, 5, True)
    assert registry.stop_shadow() == candidate.version
    assert registry.following() == (committed.version, None)
    assert registry.agreement(candidate.version).shadowing is False
    registry.start_shadow(candidate.version)  # counted afresh
    assert registry.agreement(candidate.version).requests == 0


def test_churn_is_kept_per_version(registry, candidate, committed):
    registry.record_churn(candidate.version, committed.version, {(1, 1): 6, (1, 2): 2})
    churn = registry.churn(candidate.version)
    assert (churn.users, churn.changed, churn.share) == (8, 2, 0.25)
    registry.record_churn(candidate.version, committed.version, {(2, 2): 5})
    assert registry.churn(candidate.version).changed == 0
    (listed,) = [v for v in registry.versions() if v.version == candidate.version]
    assert listed.churn.users == 5 and not listed.served
