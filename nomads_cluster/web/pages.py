"""The web page for people: tick interests (and a city), see the segment, why, and the
chat room; the segments."""

from flask import Blueprint, Response, current_app, render_template, send_from_directory

from ..cities import MAX_CITY_LENGTH
from ..segmentation.interests import INTEREST_GROUPS, key_to_label
from . import served_model

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> str:
    return render_template(
        "index.html",
        model=served_model.get_model(),
        interest_groups=INTEREST_GROUPS,
        label_of=key_to_label,
        max_city_length=MAX_CITY_LENGTH,
    )


@bp.get("/favicon.ico")
def favicon() -> Response:
    """For clients that ask for it without reading the pages' icon link."""
    return send_from_directory(
        current_app.static_folder, "favicon.svg", mimetype="image/svg+xml", max_age=86400
    )
