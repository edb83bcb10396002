import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from nomads_cluster import create_app
from nomads_cluster.cli import DEFAULT_SURVEY
from nomads_cluster.model import DEFAULT_MODEL_DIR


@pytest.fixture
def app():
    return create_app({"TESTING": True, "MODEL_DIR": str(DEFAULT_MODEL_DIR)})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture(scope="session")
def survey_path() -> Path:
    """The real survey, beside the repo as in CI; tests that need it skip elsewhere."""
    if not DEFAULT_SURVEY.is_file():
        pytest.skip(f"the survey is not at {DEFAULT_SURVEY} (this clone has no ../shared/data)")
    return DEFAULT_SURVEY


@pytest.fixture
def model_copy(tmp_path) -> Path:
    """A copy of the committed model directory, free to tamper with."""
    return Path(shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "model"))


@pytest.fixture(scope="session")
def sklearn_model():
    """The committed model.pkl loaded by scikit-learn itself: the reference to agree with."""
    import joblib

    return joblib.load(DEFAULT_MODEL_DIR / "model.pkl")
