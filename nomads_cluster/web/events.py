"""The change feed: every placement, move and erasure, in order (personal data: a read
key). A reader follows ``next_after`` and sees every event once."""

from flask import Blueprint, Response, request

from ..schemas import EventsPage, UserEvent
from ..store.events import CursorTooOld, oldest_kept, read_events
from ..store.users import get_store
from .keys import requires_key
from .problems import RequestProblem, query_integer
from .responses import json_response

bp = Blueprint("events", __name__)

PAGE_SIZE = 100  # events per page unless ?limit= says otherwise
MAX_PAGE_SIZE = 1000
MAX_EVENT_ID = 10**18 - 1  # 18 digits: any id a 64-bit counter reaches


@bp.get("/events")
@requires_key("read")
def events() -> Response:
    """Events after ?after= (default: the oldest kept), in id order, ?limit= at most."""
    limit = query_integer("limit", PAGE_SIZE, MAX_PAGE_SIZE)
    store = get_store()
    if "after" in request.args:
        after = query_integer("after", 0, MAX_EVENT_ID, lowest=0)
    else:
        after = store.run(oldest_kept, write=False)
    try:
        found = store.run(lambda conn: read_events(conn, after, limit), write=False)
    except CursorTooOld as exc:
        raise RequestProblem(
            410,
            "Cursor too old",
            f"{exc}: rebuild each room from GET /rooms/<id>/members, then read on from "
            f"after={exc.pruned_through}",
        ) from None
    return json_response(
        EventsPage(
            events=[UserEvent.model_validate(event.as_json()) for event in found],
            next_after=found[-1].id if found else after,
        )
    )
