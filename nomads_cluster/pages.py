"""The web page for people: tick interests, see the segment and why; the segments."""

from flask import Blueprint, render_template

from . import model as segment_model
from .interests import INTEREST_GROUPS, key_to_label

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> str:
    return render_template(
        "index.html",
        model=segment_model.get_model(),
        interest_groups=INTEREST_GROUPS,
        label_of=key_to_label,
    )
