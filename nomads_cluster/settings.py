"""The service's settings: one typed class, read from NOMADS_* environment variables
(and DATABASE_URL, which Heroku's PostgreSQL add-on sets) and validated at start-up. A
wrong one stops the service with a message naming the variable and what is wrong,
before it serves anything. docs/configuration.md's table is made from this class
(``settings_table``)."""

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ServiceError
from .segmentation.drift import MAX_WINDOW
from .segmentation.model import DEFAULT_MODEL_DIR

PREFIX = "NOMADS_"
# NOMADS_* variables read by something else than the service's settings.
OTHER_VARIABLES = {"NOMADS_SURVEY_PATH", "NOMADS_TEST_DATABASE_URL"}
DATABASE_SCHEMES = ("sqlite", "postgres", "postgresql", "postgresql+psycopg")


class ConfigError(ServiceError, ValueError):
    """The settings cannot run the service; the message says which and why."""


class Settings(BaseModel):
    """Every setting of the service, with its default and what it does. Flask's own
    keys (TESTING, say) pass through to the app's configuration."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    ENV: Literal["production", "development"] = Field(
        "production", description="`development` allows `NOMADS_DEBUG=true`"
    )
    DEBUG: bool = Field(False, description="Flask's debug mode; refused outside development")
    DATABASE_URL: str | None = Field(
        None,
        validation_alias=AliasChoices("NOMADS_DATABASE_URL", "DATABASE_URL"),
        description="the store: `postgres://…` (Heroku's) or `postgresql://…` through "
        "psycopg 3, or `sqlite:///…`; unset: SQLite, `instance/nomads.sqlite3`. "
        "Also read as `DATABASE_URL`",
    )
    DATABASE_TIMEOUT: float = Field(
        3,
        gt=0,
        le=300,
        description="seconds to connect, wait for a lock or a pooled connection; then a 503",
    )
    EPHEMERAL_STORE: bool = Field(
        False,
        description="on Heroku (`DYNO` set) without `DATABASE_URL` the service refuses to "
        "start, since the dyno's disk, and SQLite on it, is lost at every restart; `true` "
        "accepts that loss (a demo)",
    )
    MODEL_DIR: Path = Field(
        DEFAULT_MODEL_DIR,
        description="the model directory (model.pkl, model.json) filed and served when "
        "the database's registry serves no version yet; ignored after that",
    )
    MODEL_CHECK_SECONDS: float = Field(
        2,
        ge=0.1,
        le=60,
        description="how often each worker reads the registry besides PostgreSQL's notifications",
    )
    DRIFT_WINDOW: int = Field(
        1000,
        ge=1,
        le=MAX_WINDOW,
        description="latest assignments `/clusters/drift` compares with training",
    )
    ROOM_SIZE: int = Field(
        250,
        ge=1,
        le=100_000,
        description="members of a chat room at most; the next "
        "member of that city and segment opens another room",
    )
    CORS_ORIGINS: str = Field(
        "*",
        min_length=1,
        description="comma-separated origins allowed to call the API from a browser",
    )
    MAX_CONTENT_LENGTH: int = Field(
        16 * 1024,
        ge=1024,
        description="largest request body, bytes (a `/cluster` body is well under 1 KiB)",
    )
    BATCH_MAX_CONTENT_LENGTH: int = Field(
        1024 * 1024, ge=1024, description="largest `/cluster/batch` body, bytes (1,000 users fit)"
    )
    API_KEY: str | None = Field(
        None,
        min_length=16,
        description="admin bearer key: erasure, and every read of "
        "the read key; unset: erasure is off",
    )
    READ_API_KEY: str | None = Field(
        None,
        min_length=16,
        description="bearer key that reads stored users' personal "
        "data (a user, its history, similar users, a room's members, the change feed) "
        "and nothing else; not the admin key. Unset: reads take the admin key",
    )
    JWT_SECRET: str | None = Field(
        None,
        min_length=32,
        description="binds writes to the caller: `POST /cluster` "
        "takes only a bearer JWT (HS256, this secret) whose `sub` is the body's `_id`, "
        "and `POST /cluster/batch` the admin key",
    )
    JWKS_URL: str | None = Field(
        None,
        pattern=r"^https?://",
        description="the same with the identity provider's "
        "published keys (RS256 or ES256); not with `NOMADS_JWT_SECRET`",
    )
    JWT_AUDIENCE: str | None = Field(None, description="the `aud` a token must carry")
    JWT_ISSUER: str | None = Field(None, description="the `iss` a token must carry")
    RATE_LIMIT: str | None = Field(
        None,
        description="per client, e.g. `120/minute;2000/hour`: over it, a 429 with "
        "`Retry-After`; `/health` and `/metrics` are exempt. Unset: no limit",
    )
    RATE_LIMIT_STORAGE_URL: str = Field(
        "memory://",
        description="where the counts live: per worker by default (so up "
        "to N workers times the limit); `redis://…` makes them exact",
    )
    TRUSTED_PROXIES: int = Field(
        0,
        ge=0,
        le=5,
        description="proxies in front (nginx, Heroku's router: 1) whose "
        "`X-Forwarded-For` names the client; at 0 it is ignored",
    )
    LOG_FORMAT: Literal["json", "text"] | None = Field(
        None,
        description="`json`: a JSON line per request; `text`: readable. Unset: "
        "`text` in development, else `json`",
    )
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="the service's log level"
    )
    EVENTS_RETENTION_DAYS: float = Field(
        7,
        gt=0,
        le=365,
        description="how long the change feed keeps its events; the worker prunes older ones",
    )
    WEBHOOK_URL: str | None = Field(
        None,
        pattern=r"^https?://",
        description="where the worker delivers the change "
        "feed; set with `NOMADS_WEBHOOK_SECRET`. Unset: no deliveries",
    )
    WEBHOOK_SECRET: str | None = Field(
        None,
        description="the deliveries' Standard Webhooks signing secret: `whsec_` "
        "and the base64 of 24 to 64 random bytes",
    )
    WEBHOOK_BATCH_SIZE: int = Field(100, ge=1, le=1000, description="events per delivery")
    WEBHOOK_TIMEOUT: float = Field(
        10,
        gt=0,
        le=60,
        description="seconds the receiver has to answer a delivery; then it is tried again",
    )

    @field_validator("WEBHOOK_SECRET")
    @classmethod
    def _a_signing_key(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
            except binascii.Error:
                key = b""
            if not 24 <= len(key) <= 64:
                raise ValueError("must be whsec_ followed by the base64 of 24 to 64 random bytes")
        return value

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
    def _consistent(self) -> "Settings":
        if self.DEBUG and self.ENV != "development":
            raise ValueError("debug mode is for development only: NOMADS_ENV=development")
        if self.JWT_SECRET is not None and self.JWKS_URL is not None:
            raise ValueError("set NOMADS_JWT_SECRET or NOMADS_JWKS_URL, not both")
        # The read key is handed to more hands than the admin key: one value for both
        # would give every reader the right to erase.
        if self.READ_API_KEY is not None and self.READ_API_KEY == self.API_KEY:
            raise ValueError("NOMADS_READ_API_KEY must differ from NOMADS_API_KEY")
        if (self.WEBHOOK_URL is None) != (self.WEBHOOK_SECRET is None):
            raise ValueError("set NOMADS_WEBHOOK_URL and NOMADS_WEBHOOK_SECRET together")
        if self.LOG_FORMAT is None:
            self.LOG_FORMAT = "text" if self.ENV == "development" else "json"
        return self


class EnvironmentSettings(BaseSettings, Settings):
    """The settings as the environment gives them."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, case_sensitive=True, extra="ignore", populate_by_name=True
    )


def load_settings(test_config: Mapping[str, Any] | None = None) -> Settings:
    """The settings from the environment, or from ``test_config`` alone; ConfigError
    listing every wrong one. From the environment, an unknown NOMADS_* variable is
    refused too (a misspelt one would otherwise be silently ignored)."""
    problems = []
    if test_config is None:
        known = {PREFIX + name for name in Settings.model_fields} | OTHER_VARIABLES
        problems += [
            f"{name}: unknown setting (known: {', '.join(sorted(known))})"
            for name in sorted(os.environ)
            if name.startswith(PREFIX) and name not in known
        ]
    try:
        if test_config is None:
            settings: Settings = EnvironmentSettings()
        else:
            settings = Settings.model_validate(test_config)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            where = _variable(error["loc"])
            problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
    on_heroku = test_config is None and "DYNO" in os.environ
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
    return settings


def _variable(loc: tuple[int | str, ...]) -> str:
    if not loc:
        return "settings"
    name = str(loc[0])
    return name if name.startswith(PREFIX) or name == "DATABASE_URL" else PREFIX + name


def _default(name: str) -> str:
    default = Settings.model_fields[name].default
    if default is None:
        return "unset"
    if isinstance(default, Path):
        return "`model/`"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return f"`{default}`"


def settings_table() -> str:
    """The settings as a Markdown table: variable, default, what it does."""
    rows = ["| variable | default | what it does |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{PREFIX}{name}` | {_default(name)} | {description} |")
    return "\n".join(rows) + "\n"
