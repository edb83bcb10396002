"""Chat rooms: their member counts (open, as the app shows them) and their members
(personal data: a read key)."""

from flask import Blueprint, Response, request
from sqlalchemy import Row

from ..cities import city_key, city_problem
from ..schemas import RoomMember, RoomMembers, RoomsList, RoomSummary
from ..store.users import get_store
from .keys import requires_key
from .problems import RequestProblem, invalid_query, query_integer
from .responses import json_response

bp = Blueprint("rooms", __name__)

PAGE_SIZE = 100  # rooms or members per page unless ?limit= says otherwise
MAX_PAGE_SIZE = 1000


def _summary(room: Row) -> RoomSummary:
    """A row of the store's room counts (id, city, segment, members)."""
    return RoomSummary.model_validate(room, from_attributes=True)


def _after() -> str | None:
    return request.args.get("after") or None


@bp.get("/rooms")
def rooms() -> Response:
    """The rooms, by id, with their member counts; ?city= only that city's."""
    limit = query_integer("limit", PAGE_SIZE, MAX_PAGE_SIZE)
    city = request.args.get("city")
    key = None
    if city is not None:
        problem = city_problem(city)
        if problem is not None:
            raise invalid_query(f"city {problem}, not {city!r}")
        key = city_key(city)
    found = get_store().rooms.page(key, _after(), limit)
    return json_response(
        RoomsList(
            rooms=[_summary(room) for room in found],
            next=found[-1].id if len(found) == limit else None,
        )
    )


@bp.get("/rooms/<room_id>/members")
@requires_key("read")
def room_members(room_id: str) -> Response:
    """A room's members, by user id, a page at a time (?after=, ?limit=)."""
    limit = query_integer("limit", PAGE_SIZE, MAX_PAGE_SIZE)
    store = get_store()
    room = store.rooms.get(room_id)
    if room is None:
        raise RequestProblem(404, "Unknown room", f"there is no room {room_id!r}")
    members = store.rooms.members(room_id, _after(), limit)
    return json_response(
        RoomMembers(
            room=_summary(room),
            members=[
                RoomMember(user_id=m.user_id, city=m.city, assigned_at=m.assigned_at)
                for m in members
            ],
            next=str(members[-1].user_id) if len(members) == limit else None,
        )
    )
