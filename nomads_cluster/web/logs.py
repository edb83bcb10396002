"""Logs: one line per request, JSON in production and text in development, each with
a request id (the client's X-Request-ID, or a new one) that the answer carries back.

Nothing personal goes in beyond the user id: the path (which names it on /users/...)
without its query string, and the id of an assigned user; never bodies or interests.
"""

import json
import logging
import re
import secrets
import sys
import time

from flask import Flask, Response, g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is kept if it is plainly an id; anything else is replaced, not logged.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
access_log = logging.getLogger("nomads_cluster.access")


def request_id() -> str:
    return g.get("request_id", "-")


def request_seconds() -> float | None:
    """Time since the request came in (its first hook); None before it, or outside one."""
    started = g.get("request_started_at")
    return None if started is None else time.perf_counter() - started


class _RequestIdFilter(logging.Filter):
    """Adds the request id to every record logged while a request is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id() if has_request_context() else "-"
        return True


# A record's own attributes; any other was given in ``extra`` and is a field of its line.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonLineFormatter(logging.Formatter):
    """A record as one line of JSON: time, level, logger, message and request id, then
    the fields given in ``extra``, then a traceback if any.

    Written here rather than taken from python-json-logger, which gave the same lines:
    the access log formats one per request, and a formatter for these few known fields
    does less work than a generic one.
    """

    TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
    ENCODER = json.JSONEncoder(default=str)  # json.dumps(default=...) makes one per call

    def __init__(self) -> None:
        super().__init__()
        self._stamp: tuple[int, str] = (-1, "")  # a second and its text: formatted once

    def format(self, record: logging.LogRecord) -> str:
        second, text = self._stamp
        if int(record.created) != second:
            second = int(record.created)
            text = time.strftime(self.TIME_FORMAT, self.converter(second))
            self._stamp = (second, text)
        line = {
            "time": text,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        line.update((k, v) for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return self.ENCODER.encode(line)


def configure_logging(log_format: str, level: str) -> None:
    """The package's logs, to standard error, as JSON lines or readable text."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonLineFormatter())
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
        g.request_id = given if _CLIENT_REQUEST_ID.fullmatch(given) else secrets.token_hex(16)

    @app.after_request
    def log_request(response: Response) -> Response:
        identifier = response.headers[REQUEST_ID_HEADER] = request_id()
        if not access_log.isEnabledFor(logging.INFO):
            return response
        seconds = request_seconds()
        fields = {
            "event": "request",
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": None if seconds is None else round(seconds * 1000, 3),
            "request_id": identifier,  # given: the filter need not look it up
        }
        if "user_id" in g:
            fields["user_id"] = g.user_id
        if app.config["LOG_FORMAT"] == "json":
            access_log.info("request", extra=fields)
        else:
            access_log.info(
                "%s %s %s %.1f ms",
                request.method,
                request.path,
                response.status_code,
                fields["duration_ms"] or 0,
                extra={"request_id": identifier},
            )
        return response
