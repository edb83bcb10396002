"""The WSGI entry point for gunicorn: ``gunicorn app_cluster:app``."""

import sys

from nomads_cluster import ConfigError, create_app
from nomads_cluster.segmentation.model import ModelError
from nomads_cluster.store.users import StoreUnavailable

try:
    app = create_app()
except (ConfigError, ModelError, StoreUnavailable) as exc:
    # One clear line instead of a traceback: the deploy must not start like this.
    sys.exit(f"nomads-cluster: {exc}")
