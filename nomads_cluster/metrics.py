"""Prometheus metrics at /metrics, right with several gunicorn workers.

With PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets it), prometheus_client keeps
each worker's samples in files there, and /metrics, whichever worker answers, adds up
those of all workers. Without it (tests, `flask run`), the process's own registry.
The drift of the segments is computed at each scrape from the store, as at
/clusters/drift.
"""

import os
import time
from collections.abc import Iterable, Iterator

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .schemas import DriftReport

bp = Blueprint("metrics", __name__)
disable_created_metrics()  # no *_created series: they double the output for nothing

REQUESTS = Counter("nomads_requests", "HTTP requests answered.", ["method", "route", "status"])
LATENCY = Histogram(
    "nomads_request_duration_seconds",
    "Time from receiving a request to its answer.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ASSIGNMENTS = Counter(
    "nomads_assignments", "Users assigned and stored, by segment.", ["segment", "source"]
)
STORE_ERRORS = Counter("nomads_store_errors", "Requests that found the store unavailable.")
MODEL_INFO = Gauge(
    "nomads_model_info",
    "1 for the model version a worker serves.",
    ["version"],
    multiprocess_mode="liveall",
)


def count_assignments(segments: Iterable[int], source: str) -> None:
    for segment in segments:
        ASSIGNMENTS.labels(segment=str(segment), source=source).inc()


def serving(version: str, replaced: str | None = None) -> None:
    """Record which model version this worker serves."""
    if replaced is not None:
        MODEL_INFO.labels(version=replaced).set(0)
    MODEL_INFO.labels(version=version).set(1)


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
            "nomads_drift_window_assignments", "Assignments in the drift window.",
            labels=["model_version"],
        )  # fmt: skip
        count.add_metric([report.model_version], report.assignments)
        yield count


@bp.get("/metrics")
def metrics() -> Response:
    from .api import drift_report

    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    drift = _DriftCollector(drift_report(current_app.config["DRIFT_WINDOW"]))
    registry.register(drift)
    try:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    finally:
        registry.unregister(drift)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    served: dict[str, str | None] = {"version": None}  # per process: copied at fork

    @app.before_request
    def start_timer() -> None:
        g.request_started = time.perf_counter()
        version = app.extensions["segment_model"].version  # after any promotion
        if version != served["version"]:
            serving(version, served["version"])
            served["version"] = version

    @app.after_request
    def count_request(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        started = g.get("request_started")
        if started is not None:
            LATENCY.labels(route).observe(time.perf_counter() - started)
        return response
