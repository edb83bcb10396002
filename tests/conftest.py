import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import settings
from sqlalchemy.engine import Engine

from nomads_cluster import create_app
from nomads_cluster.cli.model import DEFAULT_SURVEY
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, model_from_profiles
from nomads_cluster.store.engine import create_store_engine, normalize_url
from nomads_cluster.store.migrations import upgrade
from nomads_cluster.store.records import Assignment
from nomads_cluster.store.users import UserStore

# CI replays the same examples every run (a submission must not pass or fail by
# chance); elsewhere hypothesis explores new ones each time.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Set (as .ci/run does) to run every store test on PostgreSQL too; unreachable = failure.
POSTGRES_URL = os.environ.get("NOMADS_TEST_DATABASE_URL")


@pytest.fixture(scope="session")
def postgres_engine():
    if not POSTGRES_URL:
        pytest.skip("NOMADS_TEST_DATABASE_URL is not set: PostgreSQL tests skipped")
    engine = sa.create_engine(normalize_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    try:
        engine.connect().close()
    except sa.exc.OperationalError as exc:
        pytest.fail(f"NOMADS_TEST_DATABASE_URL={POSTGRES_URL} cannot be reached: {exc}")
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_url(postgres_engine):
    """A PostgreSQL URL whose tables live in a schema of their own, dropped afterwards."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    with postgres_engine.connect() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = normalize_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with postgres_engine.connect() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """Each test that uses the store runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    return request.getfixturevalue("postgres_url")


API_KEY = "test-key-0123456789"
READ_API_KEY = "test-read-key-0123456789"


def bearer(token: str) -> dict[str, str]:
    """The headers of a request that sends ``token`` as a bearer token."""
    return {"Authorization": f"Bearer {token}"}


# The headers of a caller allowed to read stored users (the app's back end).
READER = bearer(READ_API_KEY)


@pytest.fixture(scope="session")
def config_for():
    """The test settings of an app on the given database."""

    def config(database_url: str, **settings) -> dict:
        return {
            "TESTING": True,
            "MODEL_DIR": str(DEFAULT_MODEL_DIR),
            "DATABASE_URL": database_url,
            "DATABASE_TIMEOUT": 1,
            "API_KEY": API_KEY,
            "READ_API_KEY": READ_API_KEY,
            **settings,
        }

    return config


@pytest.fixture
def app_config(config_for, database_url) -> dict:
    return config_for(database_url)


def close_app(app) -> None:
    """Stop following the registry, and close the app's database connections."""
    app.extensions["model_follower"].stop()
    app.extensions["user_store"].engine.dispose()


@pytest.fixture
def make_app():
    """create_app for a test's own settings (None: from the environment); the apps'
    connections are closed afterwards."""
    apps = []

    def make(config: dict | None):
        apps.append(create_app(config))
        return apps[-1]

    yield make
    for made in apps:
        close_app(made)


@pytest.fixture
def app(app_config):
    app = create_app(app_config)
    yield app
    close_app(app)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def store(app):
    return app.extensions["user_store"]


@pytest.fixture
def engine_on():
    """``engine_on(url, revision="head")``: a store engine on ``url`` migrated to
    ``revision`` (None: not at all); disposed of afterwards."""
    engines = []

    def make(url: str, revision: str | None = "head", timeout: float = 30) -> Engine:
        engines.append(create_store_engine(url, timeout=timeout))
        if revision is not None:
            upgrade(engines[-1], revision)
        return engines[-1]

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def postgres_store(engine_on, postgres_url) -> UserStore:
    """A store of its own on PostgreSQL, as a server's worker has one."""
    return UserStore(engine_on(postgres_url), timeout=30)


class Assigner:
    """Stores users' assignments directly, as the service would have made them."""

    def __init__(self, store: UserStore):
        self.store = store

    def __call__(
        self,
        user_id: str | int,
        *interests: str,
        cluster: int = 1,
        city: str | None = None,
        model_version: str = "v1",
        source: str = "api",
    ) -> Assignment:
        """Save one user (by default in segment 1 of model v1) and return it as stored."""
        record = Assignment(
            user_id, interests, cluster, {}, model_version, source=source, city=city
        )
        self.store.assignments.save([record])
        return self.store.assignments.current(str(user_id))


@pytest.fixture
def assigned(store) -> Assigner:
    """``assigned("ana", "surf", city="Madrid")``: a stored user, in one line."""
    return Assigner(store)


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture(scope="session")
def survey_path() -> Path:
    """The real survey, beside the repo as in CI; tests that need it skip elsewhere."""
    if not DEFAULT_SURVEY.is_file():
        pytest.skip(f"the survey is not at {DEFAULT_SURVEY} (this clone has no ../shared/data)")
    return DEFAULT_SURVEY


@pytest.fixture(scope="session")
def survey(survey_path):
    """The real survey, read once for the tests that train on it."""
    from nomads_cluster.segmentation.survey import read_survey

    return read_survey(survey_path)


@pytest.fixture(scope="session")
def committed():
    """The committed model, loaded once."""
    from nomads_cluster.segmentation.model import load_model

    return load_model(DEFAULT_MODEL_DIR)


def variant_of(model, version: str):
    """Another version of ``model``: its profiles numbered round by one, so that it
    moves users to other segments."""
    card = model.card.model_copy(update={"version": version})
    return model_from_profiles(card, np.roll(model.profiles, 1, axis=0), None, version)


@pytest.fixture
def candidate(app, committed):
    """A candidate filed in the app's registry, which nobody serves."""
    model = variant_of(committed, "c0ffee000001")
    app.extensions["model_registry"].file(model, "tests")
    return model


@pytest.fixture
def model_copy(tmp_path) -> Path:
    """A copy of the committed model directory, free to tamper with."""
    return Path(shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "model"))


@pytest.fixture(scope="session")
def sklearn_model():
    """The committed model.pkl loaded by scikit-learn itself: the reference to agree with."""
    import joblib

    return joblib.load(DEFAULT_MODEL_DIR / "model.pkl")
