"""nomads-cluster: the user-segmentation service of the DigitalAndNomads app."""

from typing import TYPE_CHECKING, Any

from .settings import ConfigError, load_settings

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["ConfigError", "configured_app", "create_app"]


def configured_app(test_config: dict[str, Any] | None = None) -> "Flask":
    """An app with its settings only (``settings.Settings``), validated: from the
    environment, or ``test_config`` alone. The commands that only need the database
    start from it."""
    # Imported here, as the web layer below: the command line's offline work (assign,
    # train) starts without Flask.
    from flask import Flask

    app = Flask(
        __name__,
        instance_relative_config=True,
        static_folder="web/static",
        template_folder="web/templates",
    )
    app.config.from_mapping(load_settings(test_config).model_dump())
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

    # The extensions, in the order each needs the one before: URL rules first (they are
    # compiled as they are added), the request log and the problems before anything
    # that can fail, the served model after the store that holds its registry, the
    # group commit after both.
    for extension in (
        routing,
        logs,
        problems,
        users,
        served_model,
        commits,
        cors,
        security,
        limits,
        binding,
        metrics,
    ):
        extension.init_app(app)
    for blueprint in (api.bp, rooms.bp, events.bp, pages.bp, metrics.bp, openapi.bp, openapi.docs):
        app.register_blueprint(blueprint)
    return app
