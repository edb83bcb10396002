"""The answers the blueprints share: a JSON body, and the drift report that both
``/clusters/drift`` and ``/metrics`` give."""

from flask import Response
from pydantic import BaseModel

from ..schemas import DriftReport, SegmentDrift
from ..segmentation import drift
from ..store.users import get_store
from . import served_model


def json_response(answer: BaseModel, status: int = 200, exclude_none: bool = False) -> Response:
    return Response(
        answer.model_dump_json(exclude_none=exclude_none), status, mimetype="application/json"
    )


def drift_report(window: int) -> DriftReport:
    """The latest ``window`` live assignments of the served model against training."""
    model = served_model.get_model()
    counts = get_store().lifecycle.recent_segments(model.version, window, drift.LIVE_SOURCES)
    expected = {segment.segment: segment.share for segment in model.card.segments}
    # A model imported without its training data has no shares to drift from.
    known = None not in expected.values()
    terms = drift.psi_terms(expected, counts) if known else dict.fromkeys(expected)
    total = sum(counts.values())
    psi = sum(terms.values()) if total and known else None
    return DriftReport(
        model_version=model.version,
        window=window,
        assignments=total,
        psi=psi,
        status=drift.verdict(psi, total),
        thresholds={"moderate": drift.MODERATE, "significant": drift.SIGNIFICANT},
        segments=[
            SegmentDrift(
                segment=segment,
                training_share=share,
                recent_share=counts.get(segment, 0) / total if total else 0.0,
                recent_assignments=counts.get(segment, 0),
                psi_term=terms[segment],
            )
            for segment, share in expected.items()
        ],
    )
