"""Optional rate limiting per client (Flask-Limiter), and the client's address behind
trusted proxies. Off unless NOMADS_RATE_LIMIT is set, e.g. "120/minute;2000/hour".

The counts live in NOMADS_RATE_LIMIT_STORAGE_URL: memory:// (the default) counts per
worker, so with N workers a client gets up to N times the limit; a shared store (such as
redis://...) makes it exact. /health and /metrics are never limited.
"""

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from werkzeug.middleware.proxy_fix import ProxyFix

UNLIMITED_PATHS = ("/health", "/metrics")


def init_app(app: Flask) -> None:
    if app.config["TRUSTED_PROXIES"]:
        # Behind nginx (or Heroku's router): the client is in X-Forwarded-For.
        proxies = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]
    if not app.config["RATE_LIMIT"]:
        return
    limiter = Limiter(
        get_remote_address,
        app=app,
        default_limits=[app.config["RATE_LIMIT"]],
        default_limits_exempt_when=lambda: request.path in UNLIMITED_PATHS,
        storage_uri=app.config["RATE_LIMIT_STORAGE_URL"],
        headers_enabled=True,  # X-RateLimit-* and Retry-After
    )
    app.extensions["rate_limiter"] = limiter
