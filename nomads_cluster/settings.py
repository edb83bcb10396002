"""The service's settings, validated at start-up: a wrong one stops it with a message
naming the environment variable and what is wrong, before it serves anything."""

import base64
import binascii
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ServiceError
from .segmentation.drift import MAX_WINDOW

PREFIX = "NOMADS_"
# NOMADS_* variables read by something else than the app's settings.
OTHER_VARIABLES = {"NOMADS_SURVEY_PATH", "NOMADS_TEST_DATABASE_URL"}
DATABASE_SCHEMES = ("sqlite", "postgres", "postgresql", "postgresql+psycopg")


class ConfigError(ServiceError, ValueError):
    """The settings cannot run the service; the message says which and why."""


class Settings(BaseModel):
    """What the app's configuration must hold (Flask's own keys pass through)."""

    model_config = ConfigDict(extra="allow")

    ENV: Literal["production", "development"] = "production"
    DEBUG: bool = False
    MODEL_DIR: Path  # read only when the registry serves no version yet
    MODEL_CHECK_SECONDS: float = Field(ge=0.1, le=60)
    DRIFT_WINDOW: int = Field(ge=1, le=MAX_WINDOW)
    CORS_ORIGINS: str = Field(min_length=1)
    MAX_CONTENT_LENGTH: int = Field(ge=1024)
    BATCH_MAX_CONTENT_LENGTH: int = Field(ge=1024)
    DATABASE_URL: str | None
    DATABASE_TIMEOUT: float = Field(gt=0, le=300)
    API_KEY: str | None = Field(min_length=16)  # guessable keys are refused
    READ_API_KEY: str | None = Field(min_length=16)
    JWT_SECRET: str | None = Field(min_length=32)  # HS256: at least 256 bits
    JWKS_URL: str | None = Field(pattern=r"^https?://")
    JWT_AUDIENCE: str | None
    JWT_ISSUER: str | None
    RATE_LIMIT: str | None
    RATE_LIMIT_STORAGE_URL: str
    TRUSTED_PROXIES: int = Field(ge=0, le=5)
    LOG_FORMAT: Literal["json", "text"]
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
    EPHEMERAL_STORE: bool = False
    ROOM_SIZE: int = Field(ge=1, le=100_000)
    EVENTS_RETENTION_DAYS: float = Field(gt=0, le=365)
    WEBHOOK_URL: str | None = Field(pattern=r"^https?://")
    WEBHOOK_SECRET: str | None
    WEBHOOK_BATCH_SIZE: int = Field(ge=1, le=1000)
    WEBHOOK_TIMEOUT: float = Field(gt=0, le=60)

    @field_validator("WEBHOOK_SECRET")
    @classmethod
    def _a_signing_key(cls, value: str | None) -> str | None:
        # The Standard Webhooks form: whsec_ and the key's base64, of 24 to 64 bytes.
        if value is not None:
            try:
                key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
            except binascii.Error:
                key = b""
            if not 24 <= len(key) <= 64:
                raise ValueError("must be whsec_ followed by the base64 of 24 to 64 random bytes")
        return value

    @model_validator(mode="after")
    def _webhook_url_and_secret_together(self) -> "Settings":
        if (self.WEBHOOK_URL is None) != (self.WEBHOOK_SECRET is None):
            raise ValueError("set NOMADS_WEBHOOK_URL and NOMADS_WEBHOOK_SECRET together")
        return self

    @field_validator("DATABASE_URL")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is not None and value.partition("://")[0] not in DATABASE_SCHEMES:
            raise ValueError(f"must start with one of {', '.join(DATABASE_SCHEMES)}://")
        return value

    @field_validator("RATE_LIMIT")
    @classmethod
    def _parsable_limit(cls, value: str | None) -> str | None:
        if value is not None:
            from limits import parse_many

            try:
                parse_many(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not a rate limit such as '120/minute;2000/hour'"
                ) from None
        return value

    @model_validator(mode="after")
    def _no_debug_in_production(self) -> "Settings":
        if self.DEBUG and self.ENV != "development":
            raise ValueError("debug mode is for development only: NOMADS_ENV=development")
        return self

    @model_validator(mode="after")
    def _one_way_to_verify_tokens(self) -> "Settings":
        if self.JWT_SECRET is not None and self.JWKS_URL is not None:
            raise ValueError("set NOMADS_JWT_SECRET or NOMADS_JWKS_URL, not both")
        return self

    @model_validator(mode="after")
    def _distinct_keys(self) -> "Settings":
        # The read key is handed to more hands than the admin key: one value for both
        # would give every reader the right to erase.
        if self.READ_API_KEY is not None and self.READ_API_KEY == self.API_KEY:
            raise ValueError("NOMADS_READ_API_KEY must differ from NOMADS_API_KEY")
        return self


def validate_settings(config: dict[str, Any], environ: dict[str, str] | None) -> None:
    """Raise ConfigError listing every wrong setting; ``environ`` also has its unknown
    NOMADS_* variables refused (a misspelt one would otherwise be silently ignored)."""
    problems = []
    if environ is not None:
        known = {PREFIX + name for name in Settings.model_fields} | OTHER_VARIABLES
        problems += [
            f"{name}: unknown setting (known: {', '.join(sorted(known))})"
            for name in sorted(environ)
            if name.startswith(PREFIX) and name not in known
        ]
    try:
        settings = Settings.model_validate(config)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            where = f"{PREFIX}{error['loc'][0]}" if error["loc"] else "settings"
            problems.append(f"{where}: {error['msg']}")
    else:
        on_heroku = environ is not None and "DYNO" in environ
        if on_heroku and settings.DATABASE_URL is None and not settings.EPHEMERAL_STORE:
            # Heroku throws a dyno's disk away at each restart (at least daily): SQLite
            # there would lose every acknowledged assignment without a word.
            problems.append(
                "DATABASE_URL: not set on Heroku, where SQLite on the dyno's disk is lost at "
                "every restart: add PostgreSQL (heroku addons:create heroku-postgresql), or "
                "set NOMADS_EPHEMERAL_STORE=true to accept losing the store"
            )
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
