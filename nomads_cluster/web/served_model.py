"""The model the app serves: loaded at start-up, handed to each request, and swapped
for a newly promoted one between requests (``segmentation.model.ModelSource``).

Here, not in ``segmentation``, so that the command line's offline work imports neither
Flask nor the metrics to load a model.
"""

from flask import Flask, current_app

from ..metrics.registry import Gauge
from ..segmentation.model import ModelSource, SegmentModel

MODEL_INFO = Gauge(
    "nomads_model_info",
    "1 for the model version a worker serves.",
    ["version"],
    multiprocess_mode="liveall",
)


def init_app(app: Flask) -> None:
    """Load the model named by the MODEL_DIR setting, and follow its promotions."""
    source = ModelSource(app.config["MODEL_DIR"], float(app.config["MODEL_CHECK_SECONDS"]))
    app.extensions["model_source"] = source
    app.extensions["segment_model"] = source.model
    served: dict[str, str | None] = {"version": None}  # per process: copied at fork

    @app.before_request
    def follow_promotions() -> None:
        # One model per request: swapped between requests only.
        model = app.extensions["segment_model"] = source.refresh()
        if model.version != served["version"]:
            if served["version"] is not None:
                MODEL_INFO.labels(version=served["version"]).set(0)
            MODEL_INFO.labels(version=model.version).set(1)
            served["version"] = model.version


def get_model() -> SegmentModel:
    return current_app.extensions["segment_model"]
