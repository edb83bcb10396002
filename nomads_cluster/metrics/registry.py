"""The metric types to record with, and one scrape of every worker's samples.

With PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets it), prometheus_client keeps
each worker's samples in files there, and a scrape, whichever worker answers, adds up
those of all workers. Without it (tests, `flask run`), the process's own registry.
"""

import os
from collections.abc import Iterable

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

__all__ = [
    "CONTENT_TYPE_LATEST",
    "Collector",
    "Counter",
    "Gauge",
    "GaugeMetricFamily",
    "Histogram",
    "scrape",
]

# No *_created series: they double the output for nothing. Done here, before any metric
# is made: every metric of the service is made from the types this module exports.
disable_created_metrics()


def scrape(extra: Iterable[Collector] = ()) -> bytes:
    """The text exposition of every worker's metrics, plus ``extra`` collectors (values
    computed for this scrape alone)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    extra = list(extra)
    for collector in extra:
        registry.register(collector)
    try:
        return generate_latest(registry)
    finally:
        for collector in extra:
            registry.unregister(collector)
