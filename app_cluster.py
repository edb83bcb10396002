"""The WSGI entry point for gunicorn: ``gunicorn app_cluster:app``."""

import sys

from nomads_cluster import create_app
from nomads_cluster.model import ModelError

try:
    app = create_app()
except ModelError as exc:
    # One clear line instead of a traceback: the deploy must not serve this model.
    sys.exit(f"nomads-cluster: {exc}")
