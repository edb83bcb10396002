"""nomads-cluster: the user-segmentation service of the DigitalAndNomads app."""

from typing import Any

from flask import Flask

from . import api, cors, model, problems

DEFAULTS: dict[str, Any] = {
    "MODEL_DIR": str(model.DEFAULT_MODEL_DIR),
    "CORS_ORIGINS": "*",  # comma-separated origins, as the original: any
    "MAX_CONTENT_LENGTH": 16 * 1024,  # a /cluster body is well under 1 KiB
}


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """The application factory: settings from NOMADS_* environment variables."""
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    if test_config is None:
        app.config.from_prefixed_env("NOMADS")
    else:
        app.config.from_mapping(test_config)

    problems.init_app(app)
    model.init_app(app)
    cors.init_app(app)
    app.register_blueprint(api.bp)
    return app
