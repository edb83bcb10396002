"""Settings from the environment, validated at start-up with messages that name them."""

import os
import subprocess
import sys

import pytest
from helpers.live_server import REPO

from nomads_cluster import ConfigError, create_app
from nomads_cluster.settings import load_settings, settings_table


@pytest.fixture
def environment(monkeypatch, tmp_path):
    """A clean NOMADS_* environment on a SQLite file; returns a setter."""
    for name in list(os.environ):
        if name.startswith("NOMADS_") and name != "NOMADS_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("NOMADS_DATABASE_URL", f"sqlite:///{tmp_path}/db.sqlite3")
    return monkeypatch.setenv


@pytest.mark.parametrize(
    ("name", "value", "what"),
    [
        ("NOMADS_MAX_CONTENT_LENGTH", "abc", "Input should be a valid integer"),
        ("NOMADS_MAX_CONTENT_LENGTH", "10", "Input should be greater than or equal to 1024"),
        ("NOMADS_DATABASE_TIMEOUT", "0", "Input should be greater than 0"),
        ("NOMADS_API_KEY", "short-key", "String should have at least 16 characters"),
        ("NOMADS_READ_API_KEY", "short-key", "String should have at least 16 characters"),
        ("NOMADS_JWT_SECRET", "short-secret", "String should have at least 32 characters"),
        ("NOMADS_JWKS_URL", "file:///keys.json", "String should match pattern"),
        ("NOMADS_LOG_FORMAT", "xml", "Input should be 'json' or 'text'"),
        ("NOMADS_MODEL_CHECK_SECONDS", "0", "Input should be greater than or equal to 0.1"),
        ("NOMADS_DATABASE_URL", "mysql://db/x", "must start with one of sqlite"),
        ("NOMADS_DRIFT_WINDOW", "0", "Input should be greater than or equal to 1"),
        ("NOMADS_DATABSE_URL", "postgresql://db/x", "unknown setting"),
    ],
)
def test_a_wrong_setting_is_named_with_what_is_wrong(environment, name, value, what):
    environment(name, value)
    with pytest.raises(ConfigError) as refused:
        create_app()
    assert f"{name}: {what}" in str(refused.value)


def test_debug_is_refused_outside_development(environment):
    environment("NOMADS_DEBUG", "true")
    with pytest.raises(ConfigError, match="debug mode is for development only: NOMADS_ENV="):
        create_app()


def test_one_value_for_the_read_and_the_admin_key_is_refused(environment):
    environment("NOMADS_API_KEY", "one-key-for-everything")
    environment("NOMADS_READ_API_KEY", "one-key-for-everything")
    with pytest.raises(ConfigError, match="NOMADS_READ_API_KEY must differ from NOMADS_API_KEY"):
        create_app()


def test_tokens_are_verified_one_way_only(environment):
    environment("NOMADS_JWT_SECRET", "a-secret-of-at-least-thirty-two-characters")
    environment("NOMADS_JWKS_URL", "https://idp.example/.well-known/jwks.json")
    with pytest.raises(ConfigError, match="set NOMADS_JWT_SECRET or NOMADS_JWKS_URL, not both"):
        create_app()


def test_every_wrong_setting_is_listed_at_once(environment):
    environment("NOMADS_LOG_LEVEL", "LOUD")
    environment("NOMADS_MODEL_CHECK_SECONDS", "-1")
    with pytest.raises(ConfigError) as refused:
        create_app()
    assert "NOMADS_LOG_LEVEL" in str(refused.value)
    assert "NOMADS_MODEL_CHECK_SECONDS" in str(refused.value)


def test_heroku_without_a_database_refuses_to_start(environment, monkeypatch):
    """A dyno's disk is thrown away at each restart: SQLite there would lose everything."""
    monkeypatch.delenv("NOMADS_DATABASE_URL")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DYNO", "web.1")
    with pytest.raises(ConfigError, match=r"add PostgreSQL .* or set NOMADS_EPHEMERAL_STORE=true"):
        create_app()


@pytest.mark.parametrize(
    ("name", "value"),
    [("NOMADS_EPHEMERAL_STORE", "true"), ("DATABASE_URL", "postgres://db/nomads")],
    ids=["opted-in-to-a-throwaway-store", "with-the-add-on-s-database"],
)
def test_heroku_starts_with_a_database_or_an_explicit_throwaway_store(
    environment, monkeypatch, name, value
):
    monkeypatch.delenv("NOMADS_DATABASE_URL")
    monkeypatch.setenv("DYNO", "web.1")
    environment(name, value)
    settings = load_settings()
    assert settings.EPHEMERAL_STORE or settings.DATABASE_URL == "postgres://db/nomads"


def test_a_key_of_digits_stays_a_key(environment):
    environment("NOMADS_API_KEY", "1234567890123456")
    assert load_settings().API_KEY == "1234567890123456"


def test_the_documented_table_is_the_settings_class():
    page = (REPO / "docs" / "configuration.md").read_text()
    assert settings_table() in page


def test_debug_is_allowed_in_development(environment, make_app):
    environment("NOMADS_ENV", "development")
    environment("NOMADS_DEBUG", "true")
    assert make_app(None).debug is True


def test_defaults_run_in_production_without_debug(environment, make_app):
    app = make_app(None)
    assert app.config["ENV"] == "production" and app.debug is False
    assert app.config["LOG_FORMAT"] == "json"


def test_development_logs_readable_text_unless_told_otherwise(environment, make_app):
    environment("NOMADS_ENV", "development")
    assert make_app(None).config["LOG_FORMAT"] == "text"
    environment("NOMADS_LOG_FORMAT", "json")
    assert make_app(None).config["LOG_FORMAT"] == "json"


def test_the_server_refuses_to_start_in_one_line(tmp_path):
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NOMADS_")},
        "NOMADS_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "NOMADS_API_KEY": "1234",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import app_cluster"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("nomads-cluster: invalid configuration: NOMADS_API_KEY")
