"""What each route takes and answers, as the API's description says it: one entry per
operation (its parameters, its body and an example, its answers by status, the key it
needs), from which ``openapi.py`` builds the OpenAPI document."""

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .. import schemas
from ..cities import CITY_PATTERN, MAX_CITY_LENGTH
from ..segmentation.card import ModelCard, SegmentSummary
from .api import (
    HISTORY_LIMIT,
    MAX_DRIFT_WINDOW,
    MAX_HISTORY_LIMIT,
    MAX_SIMILAR_K,
    SIMILAR_K,
)
from .events import MAX_EVENT_ID
from .events import MAX_PAGE_SIZE as MAX_EVENTS_PAGE
from .events import PAGE_SIZE as EVENTS_PAGE
from .keys import Right, key_variables
from .rooms import MAX_PAGE_SIZE, PAGE_SIZE

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
