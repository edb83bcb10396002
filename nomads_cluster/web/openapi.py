"""The OpenAPI 3.1 document, generated from the schema classes the API validates and answers
with (one source of truth), and Swagger UI at /docs, from the swagger-ui-py package's files.
"""

import re
import sys
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, json, render_template, url_for
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .. import schemas
from ..cities import CITY_PATTERN, MAX_CITY_LENGTH
from ..segmentation.card import ModelCard, SegmentSummary
from .api import (
    HISTORY_LIMIT,
    MAX_DRIFT_WINDOW,
    MAX_HISTORY_LIMIT,
    MAX_SIMILAR_K,
    SIMILAR_K,
    cluster_answer,
)
from .events import MAX_EVENT_ID
from .events import MAX_PAGE_SIZE as MAX_EVENTS_PAGE
from .events import PAGE_SIZE as EVENTS_PAGE
from .keys import KEYS_GRANTING, Right, key_variables
from .problems import PROBLEM_MIMETYPE
from .rooms import MAX_PAGE_SIZE, PAGE_SIZE
from .served_model import get_model

bp = Blueprint("openapi", __name__)


def swagger_ui_files() -> Path:
    """Swagger UI's files in the swagger-ui-py package, found without importing it (its
    Python side, for other frameworks, would cost start-up time for nothing)."""
    package = find_spec("swagger_ui")
    if package is None or not package.submodule_search_locations:
        raise ImportError("swagger-ui-py is not installed: pip install -r requirements.txt")
    return Path(package.submodule_search_locations[0]) / "static"


# Swagger UI's files, from the package; the page and its set-up script are ours.
docs = Blueprint(
    "docs",
    __name__,
    url_prefix="/docs",
    static_folder=swagger_ui_files(),
    static_url_path="/swagger-ui",
)

# Bodies of the examples; the answers' examples are the loaded model's own answers.
CLUSTER_EXAMPLE = {
    "_id": "6172a562284bf0c3a4c8632a",
    "interests": {"surf": True, "coffee": True, "sunsets": True, "museums": False},
}
BATCH_EXAMPLE = {
    "users": [CLUSTER_EXAMPLE, {"_id": 42, "interests": {"surfing": True}}],
}

_USER_ID = {
    "name": "user_id",
    "in": "path",
    "required": True,
    "description": "The _id the user was assigned with (integers as their digits).",
    "schema": {"type": "string"},
    "example": "6172a562284bf0c3a4c8632a",
}


_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": PAGE_SIZE},
}


def _after(what: str) -> dict[str, Any]:
    return {
        "name": "after",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": f"The `next` of the previous page: {what} after it.",
    }


# What an operation answers with a status: a description, and the body's class if any.
Answer = tuple[str, type[BaseModel] | None]


@dataclass(frozen=True)
class Operation:
    """One documented operation: what it takes and what it answers, by status."""

    method: str
    path: str
    summary: str
    tag: str
    responses: dict[int, Answer]
    body: type[BaseModel] | None = None
    body_example: dict[str, Any] | None = None
    parameters: list[dict[str, Any]] = field(default_factory=list)
    media_type: str = "application/json"  # of the 200 answer
    key: Right | None = None  # the bearer key's right it needs, if any

    @property
    def operation_id(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", f"{self.method} {self.path}".lower()).strip("_")


# A security scheme per key setting (both are bearer tokens).
_KEY_SCHEMES = {"API_KEY": "adminKey", "READ_API_KEY": "readKey"}


def _key_problems(right: Right) -> dict[int, Answer]:
    return {
        401: ("The bearer key is missing or wrong.", schemas.Problem),
        403: (f"Turned off: the server has no {key_variables(right)}.", schemas.Problem),
    }


# Only where writes are bound to the caller (NOMADS_JWT_SECRET or NOMADS_JWKS_URL).
_BOUND_WRITES: dict[int, Answer] = {
    401: (
        "Writes are bound to the caller, and the user's bearer JWT is missing or not valid.",
        schemas.Problem,
    ),
    403: (
        "Writes are bound to the caller, and the token's subject is another user.",
        schemas.Problem,
    ),
}

_PROBLEMS_OF_BODIES: dict[int, Answer] = {
    400: ("The body is not JSON.", schemas.Problem),
    413: ("The body is too large.", schemas.Problem),
    422: ("The body breaks the schema; `errors` says where.", schemas.Problem),
}
_STORE_DOWN: dict[int, Answer] = {
    503: ("The store is down: nothing was stored; retry.", schemas.Problem)
}
_UNKNOWN_USER: dict[int, Answer] = {
    404: ("No assignment is stored for this user.", schemas.Problem)
}
_ASSIGNED: Answer = ("The user's segment, explained.", schemas.ClusterResponse)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "post",
        "/cluster",
        "Assign a user to a segment, and remember it",
        "segments",
        {200: _ASSIGNED, **_PROBLEMS_OF_BODIES, **_BOUND_WRITES, **_STORE_DOWN},
        body=schemas.ClusterRequest,
        body_example=CLUSTER_EXAMPLE,
    ),
    Operation(
        "post",
        "/cluster/preview",
        "The answer /cluster would give, stored nowhere",
        "segments",
        {200: _ASSIGNED, **_PROBLEMS_OF_BODIES},
        body=schemas.ClusterRequest,
        body_example=CLUSTER_EXAMPLE,
    ),
    Operation(
        "post",
        "/cluster/batch",
        f"Assign up to {schemas.BATCH_LIMIT} users at once",
        "segments",
        {
            200: ("One result per user, in order.", schemas.BatchResponse),
            401: (
                "Writes are bound to the caller, and the admin key is missing or wrong.",
                schemas.Problem,
            ),
            **_PROBLEMS_OF_BODIES,
            **_STORE_DOWN,
        },
        body=schemas.BatchRequest,
        body_example=BATCH_EXAMPLE,
    ),
    Operation(
        "get",
        "/clusters",
        "Every segment: label, top interests, share",
        "segments",
        {200: ("The loaded model's segments.", schemas.SegmentsOverview)},
    ),
    Operation(
        "get",
        "/clusters/drift",
        "Recent segments against training (PSI)",
        "segments",
        {
            200: ("The drift of the served model's segments.", schemas.DriftReport),
            400: (f"The window is not an integer from 1 to {MAX_DRIFT_WINDOW}.", schemas.Problem),
            **_STORE_DOWN,
        },
        parameters=[
            {
                "name": "window",
                "in": "query",
                "required": False,
                "description": "How many of the latest assignments (default NOMADS_DRIFT_WINDOW).",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_DRIFT_WINDOW},
            }
        ],
    ),
    Operation(
        "get",
        "/clusters/{number}",
        "One segment",
        "segments",
        {
            200: ("The segment.", SegmentSummary),
            404: ("No such segment.", schemas.Problem),
        },
        parameters=[
            {
                "name": "number",
                "in": "path",
                "required": True,
                "example": 1,
                "schema": {"type": "integer"},
                "description": "The segment, 1..n_segments.",
            }
        ],
    ),
    Operation(
        "get",
        "/clusters/heatmap.png",
        "Heatmap of the segments by interest",
        "segments",
        {200: ("A PNG picture.", None), 404: ("The model has no heatmap.", schemas.Problem)},
        media_type="image/png",
    ),
    Operation(
        "get",
        "/version",
        "The model card of the model that answers",
        "service",
        {200: ("The model card.", ModelCard)},
    ),
    Operation(
        "get",
        "/users/{user_id}",
        "A user's current assignment",
        "users",
        {
            200: ("What the user was last told.", schemas.StoredAssignment),
            **_key_problems("read"),
            **_UNKNOWN_USER,
            **_STORE_DOWN,
        },
        parameters=[_USER_ID],
        key="read",
    ),
    Operation(
        "get",
        "/users/{user_id}/history",
        "A user's assignments, newest first",
        "users",
        {
            200: ("The user's history.", schemas.UserHistory),
            400: (f"The limit is not an integer from 1 to {MAX_HISTORY_LIMIT}.", schemas.Problem),
            **_key_problems("read"),
            **_UNKNOWN_USER,
            **_STORE_DOWN,
        },
        parameters=[
            _USER_ID,
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_HISTORY_LIMIT,
                    "default": HISTORY_LIMIT,
                },
            },
        ],
        key="read",
    ),
    Operation(
        "get",
        "/users/{user_id}/similar",
        "The stored users most like a user",
        "users",
        {
            200: ("The k most similar users, by Jaccard of their interests.", schemas.SimilarUsers),
            400: (
                f"k is not an integer from 1 to {MAX_SIMILAR_K}, or city is not `same`.",
                schemas.Problem,
            ),
            **_key_problems("read"),
            **_UNKNOWN_USER,
            **_STORE_DOWN,
        },
        parameters=[
            _USER_ID,
            {
                "name": "k",
                "in": "query",
                "required": False,
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_SIMILAR_K,
                    "default": SIMILAR_K,
                },
            },
            {
                "name": "city",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": ["same"]},
                "description": "`same`: only users of the user's city (none for a user without "
                "one).",
            },
        ],
        key="read",
    ),
    Operation(
        "get",
        "/rooms",
        "Chat rooms and their member counts",
        "rooms",
        {
            200: ("The rooms, by id.", schemas.RoomsList),
            400: ("A bad city or limit.", schemas.Problem),
            **_STORE_DOWN,
        },
        parameters=[
            {
                "name": "city",
                "in": "query",
                "required": False,
                "example": "Madrid",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_CITY_LENGTH,
                    "pattern": CITY_PATTERN,
                },
                "description": "Only this city's rooms (case, accents and spaces do not count).",
            },
            _LIMIT,
            _after("rooms"),
        ],
    ),
    Operation(
        "get",
        "/rooms/{room_id}/members",
        "A room's members",
        "rooms",
        {
            200: ("The room and a page of its members, by user id.", schemas.RoomMembers),
            400: ("A bad limit.", schemas.Problem),
            404: ("No such room.", schemas.Problem),
            **_key_problems("read"),
            **_STORE_DOWN,
        },
        parameters=[
            {
                "name": "room_id",
                "in": "path",
                "required": True,
                "example": "madrid-1",
                "schema": {"type": "string"},
            },
            _LIMIT,
            _after("members"),
        ],
        key="read",
    ),
    Operation(
        "get",
        "/events",
        "Every placement, move and erasure, in order",
        "rooms",
        {
            200: ("Up to `limit` events after `after`, in id order.", schemas.EventsPage),
            400: ("A bad after or limit.", schemas.Problem),
            410: (
                "Events after `after` were pruned: rebuild from the rooms' members.",
                schemas.Problem,
            ),
            **_key_problems("read"),
            **_STORE_DOWN,
        },
        parameters=[
            {
                "name": "after",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 0, "maximum": MAX_EVENT_ID},
                "description": "The `next_after` of the previous page [default: the oldest kept].",
            },
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_EVENTS_PAGE,
                    "default": EVENTS_PAGE,
                },
            },
        ],
        key="read",
    ),
    Operation(
        "delete",
        "/users/{user_id}",
        "Erase a user's assignment and history",
        "users",
        {
            204: ("Erased.", None),
            **_key_problems("admin"),
            **_UNKNOWN_USER,
            **_STORE_DOWN,
        },
        parameters=[_USER_ID],
        key="admin",
    ),
    Operation(
        "get",
        "/metrics",
        "Prometheus metrics of every worker",
        "service",
        {200: ("Prometheus text format.", None), **_STORE_DOWN},
        media_type="text/plain",
    ),
    Operation(
        "get",
        "/health",
        "Whether the service can assign",
        "service",
        {
            200: (
                "It can (degraded: it could not load the model the registry serves, and "
                "keeps serving the one it had).",
                schemas.Health,
            ),
            503: ("The store is down.", schemas.Health),
        },
    ),
)


def _component_schemas() -> tuple[dict[type[BaseModel], dict], dict[str, Any]]:
    """Each class's reference, and the components that define them."""
    bodies = {op.body for op in OPERATIONS if op.body}
    answers = {cls for op in OPERATIONS for _, cls in op.responses.values() if cls}
    # A request body's schema is what it accepts; an answer's, what it sends.
    modes = [(cls, "validation") for cls in sorted(bodies, key=lambda c: c.__name__)] + [
        (cls, "serialization") for cls in sorted(answers - bodies, key=lambda c: c.__name__)
    ]
    refs, definitions = models_json_schema(modes, ref_template="#/components/schemas/{model}")
    return {cls: refs[cls, mode] for cls, mode in modes}, definitions.get("$defs", {})


def _problem_example(path: str, status: int, description: str) -> dict[str, Any]:
    """A problem as this response sends it: its own status, title and detail (the
    schema's one example would show every error as a 400)."""
    return {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": description,
        "instance": path,
    }


def _response(op: Operation, status: int, refs: dict, examples: dict) -> dict[str, Any]:
    description, cls = op.responses[status]
    if status == 200 and op.media_type != "application/json":
        schema = {"type": "string"}
        if not op.media_type.startswith("text/"):
            schema["format"] = "binary"
        return {"description": description, "content": {op.media_type: {"schema": schema}}}
    if cls is None:
        return {"description": description}
    media = PROBLEM_MIMETYPE if cls is schemas.Problem else "application/json"
    content: dict[str, Any] = {"schema": refs[cls]}
    if (op.method, op.path, status) in examples:
        content["example"] = examples[op.method, op.path, status]
    elif cls is schemas.Problem:
        content["example"] = _problem_example(op.path, status, description)
    response: dict[str, Any] = {"description": description, "content": {media: content}}
    if status == 503:
        response["headers"] = {
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}
        }
    return response


def build_openapi(examples: dict[tuple[str, str, int], Any], description: str) -> dict[str, Any]:
    """The OpenAPI document; ``examples`` are answers by (method, path, status)."""
    refs, components = _component_schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        operation: dict[str, Any] = {
            "summary": op.summary,
            "operationId": op.operation_id,
            "tags": [op.tag],
            "responses": {
                str(status): _response(op, status, refs, examples) for status in op.responses
            },
        }
        if op.parameters:
            operation["parameters"] = op.parameters
        if op.body is not None:
            content: dict[str, Any] = {"schema": refs[op.body]}
            if op.body_example is not None:
                content["example"] = op.body_example
            operation["requestBody"] = {"required": True, "content": {"application/json": content}}
        if op.key is not None:  # any one of the keys that grant the right
            operation["security"] = [{_KEY_SCHEMES[name]: []} for name in KEYS_GRANTING[op.key]]
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nomads-cluster",
            "version": "1",
            "description": description,
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                scheme: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": f"The NOMADS_{name} of the server.",
                }
                for name, scheme in _KEY_SCHEMES.items()
            },
        },
    }


def _live_examples() -> dict[tuple[str, str, int], Any]:
    """The loaded model's answers to the documented examples."""
    model = get_model()
    _, answer = cluster_answer(schemas.ClusterRequest.model_validate(CLUSTER_EXAMPLE), "example")
    as_json = answer.model_dump(mode="json")
    return {
        ("post", "/cluster", 200): as_json,
        ("post", "/cluster/preview", 200): as_json,
        ("get", "/clusters/{number}", 200): model.card.segments[0].model_dump(mode="json"),
        ("get", "/version", 200): model.card.model_dump(mode="json"),
    }


@bp.get("/openapi.json")
def openapi_document() -> Response:
    version = get_model().version
    cached = current_app.extensions.get("openapi_document")
    if cached is None or cached[0] != version:  # its examples are the model's answers
        # The service's description: the docstring of the package that made the app.
        description = (sys.modules[current_app.import_name].__doc__ or "").strip()
        cached = version, json.dumps(build_openapi(_live_examples(), description))
        current_app.extensions["openapi_document"] = cached
    return Response(cached[1], mimetype="application/json")


@docs.get("")
def swagger_ui() -> str:
    return render_template("docs.html", openapi_url=url_for("openapi.openapi_document"))
