"""The WSGI entry point for gunicorn: ``gunicorn app_cluster:app``."""

import sys

from nomads_cluster import ConfigError, create_app
from nomads_cluster.segmentation.model import ModelError
from nomads_cluster.store.users import StoreUnavailable, preload

try:
    app = create_app()
    preload(app.extensions["user_store"])  # gunicorn preloads this module, then forks
except (ConfigError, ModelError, StoreUnavailable) as exc:
    # One clear line instead of a traceback: the deploy must not start like this.
    sys.exit(f"nomads-cluster: {exc}")
