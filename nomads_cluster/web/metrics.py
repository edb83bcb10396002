"""The request metrics and GET /metrics, attached to the app by the factory.

The drift of the segments and the change feed's figures are read at each scrape from
the store (the drift as at /clusters/drift); the other series are recorded where they
happen (see ``nomads_cluster.metrics``).
"""

import functools
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request

from ..metrics.registry import (
    CONTENT_TYPE_LATEST,
    Collector,
    Counter,
    GaugeMetricFamily,
    Histogram,
    scrape,
)
from ..schemas import DriftReport
from ..store.events import delivery_figures, last_event_id
from ..store.users import get_store
from .logs import request_seconds
from .responses import drift_report

bp = Blueprint("metrics", __name__)

REQUESTS = Counter("nomads_requests", "HTTP requests answered.", ["method", "route", "status"])
LATENCY = Histogram(
    "nomads_request_duration_seconds",
    "Time from receiving a request to its answer.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class _DriftCollector(Collector):
    """The drift report of this scrape, as gauges."""

    def __init__(self, report: DriftReport):
        self.report = report

    def collect(self) -> Iterator[GaugeMetricFamily]:
        report = self.report
        psi = GaugeMetricFamily(
            "nomads_drift_psi",
            "Population stability index of the latest assignments' segments against "
            "training (NaN: no assignment yet).",
            labels=["model_version"],
        )
        psi.add_metric([report.model_version], float("nan") if report.psi is None else report.psi)
        yield psi
        shares = GaugeMetricFamily(
            "nomads_drift_segment_share",
            "Each segment's share of the latest assignments (recent) and of training.",
            labels=["model_version", "segment", "population"],
        )
        for segment in report.segments:
            number = str(segment.segment)
            shares.add_metric([report.model_version, number, "recent"], segment.recent_share)
            shares.add_metric([report.model_version, number, "training"], segment.training_share)
        yield shares
        count = GaugeMetricFamily(
            "nomads_drift_window_assignments",
            "Assignments in the drift window.",
            labels=["model_version"],
        )
        count.add_metric([report.model_version], report.assignments)
        yield count


# Each series' child, looked up once: labels() takes a lock and checks its values at
# every call. The labels come from closed sets (above), so the caches stay small.
@functools.cache
def _requests_answered(method: str, route: str, status: int) -> Any:
    return REQUESTS.labels(method, route, str(status))


@functools.cache
def _request_latency(route: str) -> Any:
    return LATENCY.labels(route)


# The methods counted by name; any other (invented by a client) is "other".
HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class _ChangeFeedCollector(Collector):
    """The change feed and its webhook deliveries, from the store: the same for every
    instance, whichever worker delivers."""

    def __init__(self, last_id: int, deliveries: list[tuple[str, int, int, float | None]]):
        self.last_id, self.deliveries = last_id, deliveries

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "nomads_events_last_id", "The id of the last event written.", value=self.last_id
        )
        by_receiver = {
            "nomads_webhook_delivered_events": "Events the receiver acknowledged.",
            "nomads_webhook_failed_attempts": "Deliveries that failed (retried later).",
            "nomads_webhook_oldest_undelivered_seconds": "Age of the oldest event not "
            "yet delivered (0: none waiting).",
        }
        families = {
            name: GaugeMetricFamily(name, text, labels=["url"])
            for name, text in by_receiver.items()
        }
        for url, delivered, failed, age in self.deliveries:
            values = (delivered, failed, age or 0.0)
            for family, value in zip(families.values(), values, strict=True):
                family.add_metric([url], value)
        yield from families.values()


@bp.get("/metrics")
def metrics() -> Response:
    drift = _DriftCollector(drift_report(current_app.config["DRIFT_WINDOW"]))
    store = get_store()
    feed = _ChangeFeedCollector(
        store.run(last_event_id, write=False), store.run(delivery_figures, write=False)
    )
    return Response(scrape([drift, feed]), content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    @app.after_request
    def count_request(response: Response) -> Response:
        # Every label from a closed set: a client must not create series at will.
        route = request.url_rule.rule if request.url_rule else "unmatched"
        method = request.method if request.method in HTTP_METHODS else "other"
        _requests_answered(method, route, response.status_code).inc()
        seconds = request_seconds()
        if seconds is not None:
            _request_latency(route).observe(seconds)
        return response
