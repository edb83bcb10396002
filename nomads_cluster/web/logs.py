"""Logs: one line per request, JSON in production and text in development, each with
a request id (the client's X-Request-ID, or a new one) that the answer carries back.

Nothing personal goes in beyond the user id: the path (which names it on /users/...)
without its query string, and the id of an assigned user; never bodies or interests.
"""

import logging
import re
import sys
import time
import uuid

from flask import Flask, Response, g, request
from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is kept if it is plainly an id; anything else is replaced, not logged.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
access_log = logging.getLogger("nomads_cluster.access")


def request_id() -> str:
    return g.get("request_id", "-")


class _RequestIdFilter(logging.Filter):
    """Adds the request id to every record logged while a request is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        from flask import has_request_context

        if not hasattr(record, "request_id"):
            record.request_id = request_id() if has_request_context() else "-"
        return True


def configure_logging(log_format: str, level: str) -> None:
    """The package's logs, to standard error, as JSON lines or readable text."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    handler.addFilter(_RequestIdFilter())
    package = logging.getLogger("nomads_cluster")
    package.handlers[:] = [handler]
    package.setLevel(level)
    # Records still reach the root logger: under gunicorn it has no handler (no
    # duplicates), and a host's own logging set-up, or pytest's caplog, sees them.


def init_app(app: Flask) -> None:
    configure_logging(app.config["LOG_FORMAT"], app.config["LOG_LEVEL"])

    @app.before_request
    def take_request_id() -> None:
        g.request_started_at = time.perf_counter()
        given = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = given if _CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex

    @app.after_request
    def log_request(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = request_id()
        started = g.get("request_started_at")
        fields = {
            "event": "request",
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3) if started else None,
        }
        if "user_id" in g:
            fields["user_id"] = g.user_id
        if access_log.isEnabledFor(logging.INFO):
            if app.config["LOG_FORMAT"] == "json":
                access_log.info("request", extra=fields)
            else:
                access_log.info(
                    "%s %s %s %.1f ms", request.method, request.path, response.status_code,
                    fields["duration_ms"] or 0,
                )  # fmt: skip
        return response
