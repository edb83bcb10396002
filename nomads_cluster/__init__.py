"""nomads-cluster: the user-segmentation service of the DigitalAndNomads app."""

import os
from typing import TYPE_CHECKING, Any

from .segmentation.model import DEFAULT_MODEL_DIR
from .settings import ConfigError, validate_settings

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["ConfigError", "configured_app", "create_app"]

DEFAULTS: dict[str, Any] = {
    "ENV": "production",  # "development" allows NOMADS_DEBUG
    "MODEL_DIR": str(DEFAULT_MODEL_DIR),  # filed and served when the registry serves none
    "MODEL_CHECK_SECONDS": 2,  # how often a worker reads the registry besides notifications
    "DRIFT_WINDOW": 1000,  # latest assignments compared with training at /clusters/drift
    "CORS_ORIGINS": "*",  # comma-separated origins, as the original: any
    "MAX_CONTENT_LENGTH": 16 * 1024,  # a /cluster body is well under 1 KiB
    "BATCH_MAX_CONTENT_LENGTH": 1024 * 1024,  # 1,000 users with every interest: 600 KiB
    "DATABASE_URL": None,  # None: SQLite in the instance folder
    "DATABASE_TIMEOUT": 3,  # seconds to connect, wait for a lock or a pooled connection
    "API_KEY": None,  # admin bearer key: erasure (and reads); None: off
    "READ_API_KEY": None,  # bearer key to read stored users; None: only the admin key
    "JWT_SECRET": None,  # HS256 secret: /cluster takes only the user's own token
    "JWKS_URL": None,  # or the identity provider's keys (RS256, ES256)
    "JWT_AUDIENCE": None,  # checked when set
    "JWT_ISSUER": None,  # checked when set
    "RATE_LIMIT": None,  # per client, e.g. "120/minute;2000/hour"; None: no limit
    "RATE_LIMIT_STORAGE_URL": "memory://",  # per worker; redis://... shares the counts
    "TRUSTED_PROXIES": 0,  # proxies in front whose X-Forwarded-For names the client
    "LOG_FORMAT": None,  # "json" or "text"; None: text in development, else JSON
    "LOG_LEVEL": "INFO",
    "EPHEMERAL_STORE": False,  # on Heroku without DATABASE_URL: accept a store lost at restarts
    "ROOM_SIZE": 250,  # members of a chat room at most; the next opens another
    "EVENTS_RETENTION_DAYS": 7,  # events older than this are pruned from the feed
    "WEBHOOK_URL": None,  # where the worker delivers the events; None: no deliveries
    "WEBHOOK_SECRET": None,  # whsec_... (Standard Webhooks): the deliveries' signing key
    "WEBHOOK_BATCH_SIZE": 100,  # events per delivery at most
    "WEBHOOK_TIMEOUT": 10,  # seconds the receiver has to answer a delivery
}


def configured_app(test_config: dict[str, Any] | None = None) -> "Flask":
    """An app with its settings only, validated: from NOMADS_* environment variables,
    or ``test_config``. DATABASE_URL is also read unprefixed, as Heroku's PostgreSQL
    add-on sets it. The commands that only need the database start from it."""
    # Imported here, as the web layer below: the command line's offline work (assign,
    # train) starts without Flask.
    from flask import Flask

    app = Flask(
        __name__,
        instance_relative_config=True,
        static_folder="web/static",
        template_folder="web/templates",
    )
    app.config.from_mapping(DEFAULTS)
    if test_config is None:
        app.config.from_prefixed_env("NOMADS")
        if not app.config["DATABASE_URL"] and os.environ.get("DATABASE_URL"):
            app.config["DATABASE_URL"] = os.environ["DATABASE_URL"]
    else:
        app.config.from_mapping(test_config)
    for key in ("API_KEY", "READ_API_KEY", "JWT_SECRET", "WEBHOOK_URL", "WEBHOOK_SECRET"):
        if app.config[key] is not None:
            # from_prefixed_env reads values as JSON: a key of digits arrives as a number.
            app.config[key] = str(app.config[key]) or None
    if app.config["LOG_FORMAT"] is None:
        app.config["LOG_FORMAT"] = "text" if app.config["ENV"] == "development" else "json"
    validate_settings(app.config, dict(os.environ) if test_config is None else None)
    return app


def create_app(test_config: dict[str, Any] | None = None) -> "Flask":
    """The application factory: ``configured_app`` with the store, the served model
    and the web layer, wired in this order."""
    app = configured_app(test_config)
    # Imported here, as in Flask's tutorial: the command line's offline work needs
    # neither the web layer nor the database unless it asks for them.
    from .store import commits, users
    from .web import (
        api,
        binding,
        cors,
        events,
        limits,
        logs,
        metrics,
        openapi,
        pages,
        problems,
        rooms,
        routing,
        security,
        served_model,
    )

    routing.init_app(app)
    logs.init_app(app)
    problems.init_app(app)
    users.init_app(app)
    served_model.init_app(app)  # the registry lives in the store's database
    commits.init_app(app)
    cors.init_app(app)
    security.init_app(app)
    limits.init_app(app)
    binding.init_app(app)
    metrics.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(rooms.bp)
    app.register_blueprint(events.bp)
    app.register_blueprint(pages.bp)
    openapi.init_app(app)
    return app
