"""The HTTP API: /cluster (the app's contract), the segments, the stored users, /health."""

import numpy as np
from flask import Blueprint, Response, current_app, g, request, url_for
from pydantic import ValidationError

from ..cities import city_key
from ..schemas import (
    BatchAssigned,
    BatchFailed,
    BatchRequest,
    BatchResponse,
    ClusterRequest,
    ClusterResponse,
    Explanation,
    Health,
    InterestContribution,
    Room,
    SegmentsOverview,
    SimilarUser,
    SimilarUsers,
    StoredAssignment,
    UserHistory,
    body_errors,
    normalised_scores,
    storable_id,
    user_id_or_none,
)
from ..segmentation.card import ModelCard
from ..segmentation.drift import MAX_WINDOW
from ..segmentation.interests import INTEREST_KEYS, encode_interests, interest_mask, mask_interests
from ..store.commits import get_committer
from ..store.engine import StoreUnavailable
from ..store.records import Assignment
from ..store.rooms import PlacedRoom
from ..store.users import STORE_ERRORS, count_assignments, get_store
from ..validation import MAX_LISTED, summarize
from . import served_model
from .binding import require_batch_right, require_own_token
from .keys import requires_key
from .problems import (
    RETRY_AFTER_SECONDS,
    RequestProblem,
    invalid_query,
    parse_body,
    query_integer,
    request_body,
    unknown_user,
)
from .responses import drift_report, json_response

bp = Blueprint("api", __name__)

HISTORY_LIMIT = 100  # entries of /users/<id>/history unless ?limit= says otherwise
MAX_HISTORY_LIMIT = 1000
MAX_DRIFT_WINDOW = MAX_WINDOW
MAX_LISTED_IN_BATCH = 100  # errors listed in a batch's answer, all items together
SIMILAR_K = 10  # users of /users/<id>/similar unless ?k= says otherwise
MAX_SIMILAR_K = 100


def _with_room(answer: ClusterResponse, placed: PlacedRoom | None) -> ClusterResponse:
    if placed is not None:
        answer.room = Room(id=placed.id, city=placed.city, segment=answer.cluster)
    return answer


def _cluster_response(
    record: Assignment, features: np.ndarray, schema: type[ClusterResponse] = ClusterResponse
) -> ClusterResponse:
    model = served_model.get_model()
    top = model.top_interests(features, record.cluster)
    return schema(
        user_id=record.user_id,
        cluster=record.cluster,
        label=model.segment_label(record.cluster),
        scores=record.scores,
        no_interests=not record.interests,
        model_version=record.model_version,
        explanation=Explanation(
            normalised_scores=normalised_scores(record.scores),
            top_interests=[
                InterestContribution(interest=key, contribution=value) for key, value in top
            ],
        ),
    )


def cluster_answer(body: ClusterRequest, source: str) -> tuple[Assignment, ClusterResponse]:
    """One user's assignment, to store, and the answer that explains it (without its
    room, which the store gives)."""
    # vars(): the validated fields themselves, without the copy model_dump would make.
    interests = vars(body.interests)
    features = encode_interests(interests)
    model = served_model.get_model()
    segment, scores = model.assign_user(features)
    keys = tuple(key for key, chosen in interests.items() if chosen)
    record = Assignment.scored(model, body.user_id, keys, segment, scores, source, body.city)
    return record, _cluster_response(record, features)


def _answer_body(source: str) -> tuple[Assignment, ClusterResponse]:
    """The request body's user, assigned; any Content-Type: the body is JSON."""
    body = parse_body(ClusterRequest, request_body(current_app.config["MAX_CONTENT_LENGTH"]))
    return cluster_answer(body, source)


@bp.post("/cluster")
def cluster() -> Response:
    """Assign one user to a segment and store it."""
    record, answer = _answer_body("api")
    require_own_token(record.user_id)  # when writes are bound to the caller
    g.user_id = record.user_id  # for the request's log line
    # Committed before the answer: no acknowledged loss.
    (placed,) = get_committer().save([record])
    count_assignments([record.cluster], "api")
    follower = served_model.get_follower()
    if follower.shadow is not None:
        features = encode_interests(dict.fromkeys(record.interests, True))
        follower.compare(served_model.get_model(), features[None, :], [record.cluster])
    return json_response(_with_room(answer, placed))


@bp.post("/cluster/preview")
def cluster_preview() -> Response:
    """The answer /cluster would give, stored nowhere: for trying interests out. With a
    city, the room the user would join now."""
    record, answer = _answer_body("preview")
    if record.city is not None:
        room_id, room_city = get_store().rooms.to_join(city_key(record.city), record.cluster)
        answer.room = Room(id=room_id, city=room_city or record.city, segment=record.cluster)
    return json_response(answer)


@bp.post("/cluster/batch")
def cluster_batch() -> Response:
    """Assign and store many users in one transaction; a bad item fails alone."""
    require_batch_right()
    batch = parse_body(BatchRequest, request_body(current_app.config["BATCH_MAX_CONTENT_LENGTH"]))
    results: list[BatchAssigned | BatchFailed | None] = [None] * len(batch.users)
    valid: list[tuple[int, ClusterRequest]] = []
    # A bad item's answer: its first error, and up to MAX_LISTED of them while the
    # batch's MAX_LISTED_IN_BATCH last: an answer stays a small multiple of its body.
    still_listed = MAX_LISTED_IN_BATCH
    for index, item in enumerate(batch.users):
        try:
            valid.append((index, ClusterRequest.model_validate(item)))
        except ValidationError as exc:
            errors = body_errors(exc, ("users", index))
            listed = errors[: min(MAX_LISTED, still_listed)]
            still_listed -= len(listed)
            results[index] = BatchFailed(
                user_id=user_id_or_none(item), detail=summarize(errors, limit=1), errors=listed
            )
    records: list[Assignment] = []
    placed: list[PlacedRoom | None] = []
    features = np.empty((0, len(INTEREST_KEYS)))
    if valid:
        interests = [vars(request_.interests) for _, request_ in valid]
        features = np.array([encode_interests(chosen) for chosen in interests])
        model = served_model.get_model()
        segments, scores = model.assign_users(features)
        records = [
            Assignment.scored(
                model,
                request_.user_id,
                tuple(key for key, chosen in user_interests.items() if chosen),
                segment,
                user_scores,
                "batch",
                request_.city,
            )
            for (_, request_), user_interests, segment, user_scores in zip(
                valid, interests, segments.tolist(), scores.tolist(), strict=True
            )
        ]
        placed = get_committer().save(records)
        count_assignments([record.cluster for record in records], "batch")
        served_model.get_follower().compare(model, features, segments.tolist())
    for (index, _), record, user_features, room in zip(
        valid, records, features, placed, strict=True
    ):
        results[index] = _with_room(_cluster_response(record, user_features, BatchAssigned), room)
    return json_response(
        BatchResponse(
            results=results,
            assigned=len(records),
            failed=len(batch.users) - len(records),
            model_version=served_model.get_model().version,
        )
    )


@bp.get("/clusters")
def clusters() -> Response:
    """Every segment of the loaded model: label, top interests, share of training users."""
    model = served_model.get_model()
    return json_response(
        SegmentsOverview(
            model_version=model.version,
            segments=model.card.segments,
            heatmap=url_for("api.clusters_heatmap"),
        )
    )


@bp.get("/clusters/drift")
def clusters_drift() -> Response:
    """The segments of the latest assignments by the served model against training."""
    window = query_integer("window", current_app.config["DRIFT_WINDOW"], MAX_DRIFT_WINDOW)
    return json_response(drift_report(window))


@bp.get("/clusters/<int(signed=True):number>")
def cluster_segment(number: int) -> Response:
    model = served_model.get_model()
    segment = model.segment(number)
    if segment is None:
        numbers = ", ".join(map(str, model.numbers))
        raise RequestProblem(
            404, "Unknown segment", f"the segments are {numbers}; there is no {number}"
        )
    return json_response(segment)


@bp.get("/clusters/heatmap.png")
def clusters_heatmap() -> Response:
    """The heatmap drawn beside the model when it was trained."""
    model = served_model.get_model()
    if model.heatmap_png is None:
        raise RequestProblem(
            404,
            "No heatmap",
            f"model {model.version} has none: draw it with `nomads-cluster heatmap`",
        )
    response = Response(model.heatmap_png, mimetype="image/png")
    response.set_etag(model.version)  # a model's heatmap never changes
    response.cache_control.max_age = 3600
    return response.make_conditional(request)


@bp.get("/version")
def version() -> Response:
    """The model card of the model that answers."""
    card: ModelCard = served_model.get_model().card
    return Response(card.model_dump_json(exclude_unset=True), mimetype="application/json")


def _stored(record: Assignment) -> StoredAssignment:
    return StoredAssignment(
        user_id=record.user_id,
        cluster=record.cluster,
        scores=record.scores,
        interests=list(record.interests),
        model_version=record.model_version,
        assigned_at=record.assigned_at,
        source=record.source,
        city=record.city,
        room_id=record.room_id,
    )


def _storable(user_id: str) -> str:
    """A path's user id, which no store can hold (NUL, over MAX_ID_LENGTH characters)
    names no user: the same 404 as an unknown one, before any query (PostgreSQL would
    refuse the query itself). Checked after the key, as every other unknown user."""
    if not storable_id(user_id):
        raise unknown_user(user_id)
    return user_id


@bp.get("/users/<user_id>")
@requires_key("read")
def user(user_id: str) -> Response:
    record = get_store().assignments.current(_storable(user_id))
    if record is None:
        raise unknown_user(user_id)
    return json_response(_stored(record))


@bp.get("/users/<user_id>/history")
@requires_key("read")
def user_history(user_id: str) -> Response:
    limit = query_integer("limit", HISTORY_LIMIT, MAX_HISTORY_LIMIT)
    records = get_store().assignments.history(_storable(user_id), limit)
    if not records:
        raise unknown_user(user_id)
    return json_response(
        UserHistory(user_id=records[0].user_id, history=[_stored(r) for r in records])
    )


@bp.get("/users/<user_id>/similar")
@requires_key("read")
def similar_users(user_id: str) -> Response:
    """The stored users most like this one, by Jaccard similarity of their interests."""
    k = query_integer("k", SIMILAR_K, MAX_SIMILAR_K)
    city = request.args.get("city")
    if city not in (None, "same"):
        raise invalid_query(f"city must be 'same' or absent, not {city!r}")
    found = get_store().similar_users.find(_storable(user_id), k, same_city=city == "same")
    if found is None:
        raise unknown_user(user_id)
    me, neighbours = found
    return json_response(
        SimilarUsers(
            user_id=me.user_id,
            similar=[
                SimilarUser(
                    user_id=other.user_id,
                    similarity=neighbour.similarity,
                    shared_interests=list(
                        mask_interests(neighbour.mask & interest_mask(me.interests))
                    ),
                    cluster=other.cluster,
                    city=other.city,
                )
                for neighbour, other in neighbours
            ],
        )
    )


@bp.delete("/users/<user_id>")
@requires_key("admin")
def erase_user(user_id: str) -> Response:
    """Erase the user's current assignment and whole history."""
    if not get_store().assignments.erase(_storable(user_id)):
        raise unknown_user(user_id)
    return Response(status=204)


@bp.get("/health")
def health() -> Response:
    """200 when the service can assign (degraded when it serves a model other than
    the registry's); 503 when its store is down."""
    model_version = served_model.get_model().version
    refused = served_model.get_follower().refused
    try:
        get_store().ping()
    except StoreUnavailable as exc:
        STORE_ERRORS.inc()
        down = Health(
            status="degraded",
            model_version=model_version,
            store="down",
            detail=str(exc),
            model_detail=refused,
        )
        response = json_response(down, 503, exclude_none=True)
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    status = "ok" if refused is None else "degraded"
    return json_response(
        Health(status=status, model_version=model_version, store="ok", model_detail=refused),
        exclude_none=True,
    )
