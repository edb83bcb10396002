"""CORS for a public JSON API without cookies: any origin ("*"), or a configured list.

The headers are the ones Flask-Cors gave with the options the service used (any
origin, sent even without an Origin header; or a list, matched without regard to case,
with ``Vary: Origin``; preflights cached a day), from one small hook: the extension's
general matching, run on every request, cost the hot path more than these few headers
(the bench serves the original service, Flask-Cors included, beside this one).
"""

from flask import Flask, Response, request

PREFLIGHT_MAX_AGE = "86400"  # seconds browsers may cache a preflight answer
# What a preflight may ask for (Flask-Cors's default list); each route still answers
# only its own methods, with a 405 for the others.
PREFLIGHT_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def parse_origins(setting: str) -> frozenset[str]:
    """Comma-separated origins; "*" allows any."""
    return frozenset(origin.strip() for origin in setting.split(",") if origin.strip())


def requested_headers(listed: str) -> str:
    """A preflight's Access-Control-Request-Headers, granted as listed (sorted)."""
    return ", ".join(sorted(name.strip() for name in listed.split(",") if name.strip()))


def init_app(app: Flask) -> None:
    origins = parse_origins(str(app.config["CORS_ORIGINS"]))
    allow_any = "*" in origins
    allowed = {origin.lower() for origin in origins}  # schemes and hosts ignore case

    @app.after_request
    def add_cors_headers(response: Response) -> Response:
        asked = request.headers
        if allow_any:
            granted = "*"
        else:
            # The answer depends on who asks, even with one origin configured, so that
            # a cache never serves one origin's grant, or its absence, to another.
            response.vary.add("Origin")
            granted = asked.get("Origin", "")
            if granted.lower() not in allowed:
                return response
        headers = response.headers
        headers["Access-Control-Allow-Origin"] = granted
        if asked.get("Access-Control-Request-Private-Network") == "true":
            headers["Access-Control-Allow-Private-Network"] = "false"
        method = asked.get("Access-Control-Request-Method", "").upper()
        if request.method == "OPTIONS" and method in PREFLIGHT_METHODS:
            if listed := requested_headers(asked.get("Access-Control-Request-Headers", "")):
                headers["Access-Control-Allow-Headers"] = listed
            headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
            headers["Access-Control-Allow-Methods"] = ", ".join(PREFLIGHT_METHODS)
        return response
