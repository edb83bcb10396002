"""Request and response schemas of the HTTP API (pydantic v2): one source of truth."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticCustomError

from .cities import CITY_PATTERN, MAX_CITY_LENGTH, city_problem, display_city
from .segmentation.card import SegmentSummary
from .segmentation.interests import INTEREST_KEYS
from .validation import ErrorDetail, describe_error, error_details

MAX_ID_LENGTH = 256


def _interest_value(value: Any) -> bool:
    # bool is a subclass of int: test it first. 0.0 and 1.0 are 0 and 1, as the OpenAPI
    # document's enum reads them in JSON Schema; "1" and friends are refused.
    if isinstance(value, bool):
        return value
    if type(value) in (int, float) and value in (0, 1):
        return bool(value)
    raise PydanticCustomError("interest_value", "must be true, false, 0 or 1")


NO_NUL = r"^[^\x00]*$"  # the pattern the OpenAPI document gives for storable_id's rule


def storable_id(text: str) -> bool:
    """Whether a user id, as text, is one that SQLite and PostgreSQL both store: 1 to
    MAX_ID_LENGTH characters and no NUL (PostgreSQL's text cannot hold it). (A lone
    surrogate never gets here: the JSON parser refuses it, and URLs decode to UTF-8.)"""
    return 0 < len(text) <= MAX_ID_LENGTH and "\x00" not in text


# Whole floats up to this size are the integer they spell (JSON Schema's ``integer``, as
# the OpenAPI document gives it: 5.0 is 5); past it a float no longer spells one exactly.
EXACT_FLOAT_INTEGERS = 2**53


def _user_id(value: Any) -> str | int:
    if type(value) is float and value.is_integer() and abs(value) <= EXACT_FLOAT_INTEGERS:
        value = int(value)
    # type() is int: not bool. Integers are stored as their digits, bounded alike.
    if (isinstance(value, str) or type(value) is int) and storable_id(str(value)):
        return value
    raise PydanticCustomError(
        "user_id",
        f"must be a non-empty string of at most {MAX_ID_LENGTH} characters (no NUL), or an "
        f"integer of at most {MAX_ID_LENGTH} characters",
    )


def _city(value: Any) -> str:
    """A city as typed (cities.city_problem), kept as displayed (cities.display_city)."""
    problem = (
        f"must be a string of 1 to {MAX_CITY_LENGTH} characters"
        if not isinstance(value, str)
        else city_problem(value)
    )
    if problem is not None:
        raise PydanticCustomError("city", problem)
    return display_city(value)


def user_id_or_none(item: Any) -> str | int | None:
    """The ``_id`` of a request body that may be invalid, if that much is valid."""
    try:
        return _user_id(item["_id"])
    except (TypeError, KeyError, IndexError, PydanticCustomError):
        return None


City = Annotated[
    str,
    PlainValidator(
        _city,
        json_schema_input_type=Annotated[
            str,
            StringConstraints(min_length=1, max_length=MAX_CITY_LENGTH, pattern=CITY_PATTERN),
        ],
    ),
]
InterestValue = Annotated[
    bool, PlainValidator(_interest_value, json_schema_input_type=bool | Literal[0, 1])
]
UserId = Annotated[
    str | int,
    PlainValidator(
        _user_id,
        json_schema_input_type=Annotated[
            str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=NO_NUL)
        ]
        | int,
    ),
]

# One optional field per interest, false when missing; any other key is an error.
Interests = create_model(
    "Interests",
    __config__=ConfigDict(extra="forbid"),
    **{key: (InterestValue, False) for key in INTEREST_KEYS},
)


class ClusterRequest(BaseModel):
    """What the app POSTs to /cluster. Other top-level fields are ignored, as before."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    user_id: UserId = Field(alias="_id", description="The app's user id, echoed unchanged.")
    interests: Interests = Field(
        description="Interest key -> true/false (or 1/0); missing means false."
    )  # type: ignore[valid-type]
    city: City | None = Field(
        default=None,
        description="Where the user is (optional): the answer then names their chat room "
        "of this city and segment. Case, accents and spaces do not count.",
        examples=["Madrid"],
    )


def normalised_scores(scores: dict[str, float]) -> dict[str, float]:
    """Each segment's part of the sum of the scores (all 0 when every score is 0)."""
    total = sum(scores.values())
    return {segment: score / total if total else 0.0 for segment, score in scores.items()}


class InterestContribution(BaseModel):
    interest: str = Field(examples=["surf"])
    contribution: float = Field(description="What the interest added to the segment's score.")


class Explanation(BaseModel):
    """Why this segment: how the scores compare, and which interests weighed most."""

    normalised_scores: dict[str, float] = Field(
        description="Each segment's score divided by the sum of the scores (all 0 when "
        "no interest was chosen).",
        examples=[{"1": 0.05, "2": 0.71, "3": 0.0, "4": 0.24}],
    )
    top_interests: list[InterestContribution] = Field(
        description="The user's interests that added most to the chosen segment's score, "
        "largest first. NMF: the scores are linear in the interests, so the contributions "
        "of all the user's interests add up to that score (within 1e-4 on near ties); a "
        "negative one pulls away from it. k-means: what each adds to the segment's logit "
        "(the scores are a softmax of the logits)."
    )


class Room(BaseModel):
    """A chat room: users of one city and segment, at most NOMADS_ROOM_SIZE of them."""

    id: str = Field(
        description="Stable and URL-safe: the city's key and the segment, then the room's "
        "number from the second room of a city and segment on.",
        examples=["madrid-3", "madrid-3-2"],
    )
    city: str = Field(description="The city as its first member wrote it.", examples=["Madrid"])
    segment: int = Field(ge=1)


def _absent(value: Any) -> bool:
    return value is None


class ClusterResponse(BaseModel):
    """The user's segment. _id and cluster keep the original service's names and types."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    user_id: str | int = Field(alias="_id")
    cluster: int = Field(ge=1, description="The segment, 1..n_segments.")
    label: str = Field(description="The segment's top interests.")
    scores: dict[str, float] = Field(description="NMF score of each segment, by number.")
    no_interests: bool = Field(
        description="True when no interest was chosen: an NMF model then answers its "
        "first segment (every score is 0), a k-means one the segment nearest to no interest."
    )
    model_version: str
    explanation: Explanation
    room: Room | None = Field(
        default=None,
        exclude_if=_absent,
        description="The user's chat room; only when the request named a city. "
        "/cluster/preview names the room the user would join now.",
    )


class SegmentsOverview(BaseModel):
    model_version: str
    segments: list[SegmentSummary]
    heatmap: str = Field(description="URL of the picture of every segment's component.")


class SegmentDrift(BaseModel):
    segment: int
    training_share: float | None = Field(
        description="Its share of the training users (null: the model came without them)."
    )
    recent_share: float = Field(description="Its share of the recent assignments.")
    recent_assignments: int
    psi_term: float | None = Field(
        description="Its term of the population stability index (null: no training share)."
    )


class DriftReport(BaseModel):
    """The segments of recent assignments against those of the training users."""

    model_version: str
    window: int = Field(description="The latest assignments looked at, at most.")
    assignments: int = Field(description="Assignments in the window (api and batch).")
    psi: float | None = Field(description="Population stability index; null: no data.")
    status: Literal["stable", "moderate", "significant", "insufficient data"]
    thresholds: dict[str, float] = Field(examples=[{"moderate": 0.1, "significant": 0.25}])
    segments: list[SegmentDrift]


class ProblemItem(BaseModel):
    """Where a request body is wrong: a JSON pointer into the body, and what is wrong."""

    pointer: str = Field(examples=["#/interests/surfing"])
    detail: str


class Problem(BaseModel):
    """An error, as RFC 9457 problem details: what is wrong and, for a body, where."""

    type: str = "about:blank"
    title: str = Field(examples=["Invalid request body"])
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str = Field(description="The path of the request.")
    errors: list[ProblemItem] | None = Field(
        default=None, description="Each error of a request body, with its place."
    )


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    model_version: str
    store: Literal["ok", "down"]
    detail: str | None = Field(default=None, description="Why the store is down.")
    model_detail: str | None = Field(
        default=None,
        description="Why this instance serves a model other than the one the registry "
        "serves (it could not load that one, and keeps the one it had).",
    )


class StoredAssignment(BaseModel):
    """An assignment as the store keeps it: what the user was told, and when."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    user_id: str | int = Field(alias="_id")
    cluster: int = Field(ge=1)
    scores: dict[str, float]
    interests: list[str] = Field(description="The interests the user chose.")
    model_version: str
    assigned_at: datetime
    source: str = Field(description="api, batch or assign: how the assignment was made.")
    city: str | None = Field(default=None, description="As the user wrote it; null: none.")
    room_id: str | None = Field(default=None, description="Their chat room; null: no city.")


class RoomSummary(Room):
    members: int = Field(ge=0)


class RoomsList(BaseModel):
    rooms: list[RoomSummary] = Field(description="By id.")
    next: str | None = Field(description="The `after` of the next page; null: the last.")


class UserEvent(BaseModel):
    """A change of a user's segment or room, or their erasure."""

    id: int = Field(description="Unique and increasing: the order of the changes.")
    type: Literal["user.placed", "user.moved", "user.erased"]
    user_id: str = Field(description="The user's `_id`, as text.")
    segment: int | None = Field(description="The segment now; null once erased.")
    room: str | None = Field(description="The room now (null: none, or erased).")
    previous_segment: int | None = Field(
        description="For user.moved and user.erased: the segment before; else null."
    )
    previous_room: str | None = Field(
        description="For user.moved and user.erased: the room before; else null."
    )
    model_version: str | None = Field(description="The model that placed the user.")
    source: str = Field(description="What made the change: api, batch, assign, reassign, erasure.")
    occurred_at: datetime


class EventsPage(BaseModel):
    events: list[UserEvent] = Field(description="In id order.")
    next_after: int = Field(description="The `after` of the next request.")


class RoomMember(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    user_id: str | int = Field(alias="_id")
    city: str = Field(description="The city as the member wrote it.")
    assigned_at: datetime


class RoomMembers(BaseModel):
    room: RoomSummary
    members: list[RoomMember] = Field(description="By user id (as text).")
    next: str | None = Field(description="The `after` of the next page; null: the last.")


class SimilarUser(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    user_id: str | int = Field(alias="_id")
    similarity: float = Field(
        ge=0, le=1, description="Jaccard: interests chosen by both / chosen by either."
    )
    shared_interests: list[str]
    cluster: int = Field(ge=1)
    city: str | None


class SimilarUsers(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    user_id: str | int = Field(alias="_id")
    similar: list[SimilarUser] = Field(
        description="Most similar first; equal similarities: who was stored first, first."
    )


class UserHistory(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    user_id: str | int = Field(alias="_id")
    history: list[StoredAssignment] = Field(description="Newest first.")


BATCH_LIMIT = 1000


class BatchRequest(BaseModel):
    """Users to assign at once; each item is validated on its own."""

    users: list[Any] = Field(
        min_length=1,
        max_length=BATCH_LIMIT,
        description=f"/cluster bodies, 1 to {BATCH_LIMIT}.",
    )


class BatchAssigned(ClusterResponse):
    status: Literal[200] = 200


class BatchFailed(BaseModel):
    """An item that could not be assigned; the others are not affected."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    status: Literal[422] = 422
    user_id: str | int | None = Field(alias="_id", description="The item's _id, if valid.")
    detail: str
    errors: list[ProblemItem]


class BatchResponse(BaseModel):
    results: list[BatchAssigned | BatchFailed] = Field(description="One per user, in order.")
    assigned: int
    failed: int
    model_version: str


def _unknown_interest(error: dict[str, Any]) -> bool:
    return error["type"] == "extra_forbidden" and error["loc"][:1] == ("interests",)


def _describe(error: dict[str, Any]) -> str:
    if _unknown_interest(error):
        return f"unknown interest {error['loc'][-1]!r}"
    return describe_error(error)


def valid_interests_note(error: ValidationError) -> str:
    """ "; valid interests: ..." once for a body that names an unknown interest (not in
    each of its errors: a body of many would get a huge answer), else nothing."""
    if any(_unknown_interest(e) for e in error.errors(include_url=False, include_input=False)):
        return f"; valid interests: {', '.join(INTEREST_KEYS)}"
    return ""


def body_errors(error: ValidationError, prefix: tuple[int | str, ...] = ()) -> list[ErrorDetail]:
    """Each schema error of a request body or a file's row: where and what."""
    return error_details(error, prefix, _describe)
