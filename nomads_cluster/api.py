"""The HTTP API: /cluster (the app's contract), /health and the home page."""

from flask import Blueprint, Response, render_template, request

from . import model as segment_model
from .interests import encode_interests
from .problems import parse_body
from .schemas import ClusterRequest, ClusterResponse

bp = Blueprint("api", __name__)


@bp.post("/cluster")
def cluster() -> Response:
    """Assign one user to a segment. Any Content-Type: the body is read as JSON."""
    body = parse_body(ClusterRequest, request.get_data(cache=False))
    model = segment_model.get_model()
    # vars(): the validated fields themselves, without model_dump's copy (13 µs).
    interests = vars(body.interests)
    features = encode_interests(interests)
    segment, scores = model.assign_user(features)
    answer = ClusterResponse(
        user_id=body.user_id,
        cluster=segment,
        label=model.segment_label(segment),
        scores=dict(zip(model.segment_names, scores, strict=True)),
        no_interests=not any(interests.values()),
        model_version=model.version,
    )
    return Response(answer.model_dump_json(), mimetype="application/json")


@bp.get("/health")
def health() -> dict:
    return {"status": "ok", "model_version": segment_model.get_model().version}


@bp.get("/")
def index() -> str:
    return render_template("index.html", model=segment_model.get_model())
