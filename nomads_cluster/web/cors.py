"""CORS for a public JSON API without cookies: any origin ("*"), or a configured list,
by Flask-Cors (the original service's choice, and the one its users know)."""

from flask import Flask, Response
from flask_cors import CORS

PREFLIGHT_MAX_AGE = 86400  # seconds browsers may cache a preflight answer


def parse_origins(setting: str) -> frozenset[str]:
    """Comma-separated origins; "*" allows any."""
    return frozenset(origin.strip() for origin in setting.split(",") if origin.strip())


def init_app(app: Flask) -> None:
    origins = parse_origins(str(app.config["CORS_ORIGINS"]))
    allow_any = "*" in origins
    CORS(
        app,
        origins="*" if allow_any else sorted(origins),
        send_wildcard=allow_any,
        # Without an Origin header: "*" when any origin may read; else nothing (several
        # origins cannot share the one Access-Control-Allow-Origin).
        always_send=allow_any,
        max_age=PREFLIGHT_MAX_AGE,
    )
    if not allow_any:
        # The answer depends on who asks, even with one origin configured (Flask-Cors
        # adds Vary only for several), so that a cache never serves one origin's grant,
        # or its absence, to another.
        @app.after_request
        def vary_on_origin(response: Response) -> Response:
            response.vary.add("Origin")
            return response
