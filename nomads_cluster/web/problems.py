"""Errors as RFC 9457 problem details (application/problem+json), for every route.

Each problem says what is wrong and, for a request body, where (a JSON pointer).
"""

import logging
import re
from typing import TypeVar

from flask import Flask, Response, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from ..schemas import Problem, body_errors, valid_interests_note
from ..store.users import STORE_ERRORS, StoreUnavailable
from ..validation import MAX_LISTED, summarize

PROBLEM_MIMETYPE = "application/problem+json"
RETRY_AFTER_SECONDS = 5
log = logging.getLogger(__name__)
Schema = TypeVar("Schema", bound=BaseModel)


class InvalidBody(Exception):
    """The client's body failed its schema (a schema failure elsewhere is our bug: a 500)."""

    def __init__(self, error: ValidationError):
        super().__init__(str(error))
        self.error = error


class UnreadableBody(Exception):
    """The body's framing is broken (a bad chunk, or fewer bytes than announced)."""


class InvalidQuery(Exception):
    """A query parameter the route cannot take; the message says which and why."""


def query_integer(name: str, default: int, highest: int, lowest: int = 1) -> int:
    """The query parameter ``name``: ASCII digits from ``lowest`` to ``highest``, else
    InvalidQuery."""
    text = request.args.get(name, str(default))
    if re.fullmatch(r"[0-9]{1,18}", text) and lowest <= int(text) <= highest:
        return int(text)
    raise InvalidQuery(f"{name} must be an integer from {lowest} to {highest}, not {text!r}")


def request_body(limit: int) -> bytes:
    """The whole request body: RequestEntityTooLarge (a 413) above ``limit`` bytes,
    whether the body has a Content-Length or comes in chunks; UnreadableBody (a 400)
    when it cannot be read in full. Never a truncated body."""
    request.max_content_length = limit
    declared = request.content_length
    if declared is not None and declared > limit:
        raise RequestEntityTooLarge()
    if declared is not None:
        size = declared
    elif request.environ.get("wsgi.input_terminated"):
        size = limit + 1  # chunked: the server's stream ends where the last chunk does
    else:
        size = 0  # no length and a server that cannot tell where the body ends
    try:
        body = request.environ["wsgi.input"].read(size)
    except Exception as exc:  # the server's parse errors have no common base class
        raise UnreadableBody(f"the body could not be read: {exc}") from None
    if len(body) > limit:
        raise RequestEntityTooLarge()
    if declared is not None and len(body) < declared:
        raise UnreadableBody(
            f"the body ended after {len(body)} of the {declared} bytes its Content-Length announced"
        )
    return body


def parse_body(schema: type[Schema], raw: bytes) -> Schema:
    """The request body, parsed as JSON and validated by ``schema``, or InvalidBody."""
    try:
        return schema.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidBody(exc) from None


def problem_response(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = Problem(
        title=title, status=status, detail=detail, instance=request.path, errors=errors or None
    )
    return Response(
        body.model_dump_json(exclude_none=True), status, headers=headers, mimetype=PROBLEM_MIMETYPE
    )


def invalid_body_problem(exc: InvalidBody) -> Response:
    """400 for a body that is not JSON at all, 422 for JSON that breaks the schema."""
    first = exc.error.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        detail = "the body is empty" if not request.content_length else first["msg"]
        return problem_response(400, "Malformed JSON", f"{detail}; send a JSON object")
    listed = body_errors(exc.error)
    detail = summarize(listed) + valid_interests_note(exc.error)
    return problem_response(422, "Invalid request body", detail, errors=listed[:MAX_LISTED])


def unreadable_body_problem(exc: UnreadableBody) -> Response:
    return problem_response(400, "Unreadable body", str(exc))


def invalid_query_problem(exc: InvalidQuery) -> Response:
    return problem_response(400, "Invalid query parameter", str(exc))


def store_unavailable_problem(exc: StoreUnavailable) -> Response:
    """The database is down or locked: nothing was stored, the client may retry."""
    log.warning("%s %s: %s", request.method, request.path, exc)
    STORE_ERRORS.inc()
    return problem_response(
        503,
        "Store unavailable",
        f"{exc}; nothing was stored, retry in {RETRY_AFTER_SECONDS} seconds",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def http_problem(exc: HTTPException) -> Response:
    headers = dict(exc.get_headers())
    headers.pop("Content-Type", None)
    detail = exc.description or ""
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        allowed = [m for m in exc.valid_methods if m not in ("HEAD", "OPTIONS")]
        detail = f"{request.method} is not allowed on {request.path}: use {' or '.join(allowed)}"
        if "POST" in allowed:
            detail += ' with a JSON body such as {"_id": "42", "interests": {"surf": true}}'
    elif isinstance(exc, RequestEntityTooLarge):
        detail = f"the body is larger than the {request.max_content_length} bytes accepted here"
    return problem_response(exc.code or 500, exc.name, detail, headers=headers)


def unexpected_problem(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return problem_response(500, "Internal Server Error", "the error was logged")


def init_app(app: Flask) -> None:
    app.register_error_handler(InvalidBody, invalid_body_problem)
    app.register_error_handler(UnreadableBody, unreadable_body_problem)
    app.register_error_handler(InvalidQuery, invalid_query_problem)
    app.register_error_handler(StoreUnavailable, store_unavailable_problem)
    app.register_error_handler(HTTPException, http_problem)
    app.register_error_handler(Exception, unexpected_problem)
