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
from ..store.engine import StoreUnavailable
from ..store.users import STORE_ERRORS
from ..validation import MAX_LISTED, summarize

PROBLEM_MIMETYPE = "application/problem+json"
RETRY_AFTER_SECONDS = 5
log = logging.getLogger(__name__)
Schema = TypeVar("Schema", bound=BaseModel)


class RequestProblem(Exception):
    """Why a request cannot be served, raised wherever that is found and answered as
    one problem by ``render``: the status, a title, what is wrong and what to do, and
    for a body each error with its place."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = headers


def invalid_query(detail: str) -> RequestProblem:
    """A query parameter the route cannot take; ``detail`` says which and why."""
    return RequestProblem(400, "Invalid query parameter", detail)


def unknown_user(user_id: str | int) -> RequestProblem:
    return RequestProblem(404, "Unknown user", f"no assignment is stored for user {user_id!r}")


def invalid_body(error: ValidationError) -> RequestProblem:
    """400 for a body that is not JSON at all, 422 for JSON that breaks the schema."""
    first = error.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        detail = "the body is empty" if not request.content_length else first["msg"]
        return RequestProblem(400, "Malformed JSON", f"{detail}; send a JSON object")
    listed = body_errors(error)
    detail = summarize(listed) + valid_interests_note(error)
    return RequestProblem(422, "Invalid request body", detail, errors=listed[:MAX_LISTED])


def unreadable_body(detail: str) -> RequestProblem:
    """The body's framing is broken (a bad chunk, or fewer bytes than announced)."""
    return RequestProblem(400, "Unreadable body", detail)


def query_integer(name: str, default: int, highest: int, lowest: int = 1) -> int:
    """The query parameter ``name``: ASCII digits from ``lowest`` to ``highest``, else
    a 400 problem."""
    text = request.args.get(name, str(default))
    if re.fullmatch(r"[0-9]{1,18}", text) and lowest <= int(text) <= highest:
        return int(text)
    raise invalid_query(f"{name} must be an integer from {lowest} to {highest}, not {text!r}")


def request_body(limit: int) -> bytes:
    """The whole request body: RequestEntityTooLarge (a 413) above ``limit`` bytes,
    whether the body has a Content-Length or comes in chunks; a 400 problem when it
    cannot be read in full. Never a truncated body."""
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
        raise unreadable_body(f"the body could not be read: {exc}") from None
    if len(body) > limit:
        raise RequestEntityTooLarge()
    if declared is not None and len(body) < declared:
        raise unreadable_body(
            f"the body ended after {len(body)} of the {declared} bytes its Content-Length announced"
        )
    return body


def parse_body(schema: type[Schema], raw: bytes) -> Schema:
    """The request body, parsed as JSON and validated by ``schema``, or a 400/422
    problem (a schema failure elsewhere is our bug: a 500)."""
    try:
        return schema.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid_body(exc) from None


def render(problem: RequestProblem) -> Response:
    """The one way a problem is answered: application/problem+json (RFC 9457)."""
    body = Problem(
        title=problem.title,
        status=problem.status,
        detail=problem.detail,
        instance=request.path,
        errors=problem.errors or None,
    )
    return Response(
        body.model_dump_json(exclude_none=True),
        problem.status,
        headers=problem.headers,
        mimetype=PROBLEM_MIMETYPE,
    )


def store_unavailable(exc: StoreUnavailable) -> Response:
    """The database is down or locked: nothing was stored, the client may retry."""
    log.warning("%s %s: %s", request.method, request.path, exc)
    STORE_ERRORS.inc()
    return render(retry_later("Store unavailable", f"{exc}; nothing was stored"))


def retry_later(title: str, detail: str) -> RequestProblem:
    """A 503 for what should pass on its own: the client may retry after a while."""
    return RequestProblem(
        503,
        title,
        f"{detail}, retry in {RETRY_AFTER_SECONDS} seconds",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def http_error(exc: HTTPException) -> Response:
    """Werkzeug's own errors (an unknown path, a wrong method, a body too large)."""
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
    return render(RequestProblem(exc.code or 500, exc.name, detail, headers=headers))


def unexpected_error(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return render(RequestProblem(500, "Internal Server Error", "the error was logged"))


def init_app(app: Flask) -> None:
    app.register_error_handler(RequestProblem, render)
    app.register_error_handler(StoreUnavailable, store_unavailable)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, unexpected_error)
