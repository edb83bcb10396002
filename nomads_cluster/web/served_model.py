"""The model the app serves: the version the registry serves, loaded at start-up,
handed to each request, and swapped between requests when the fleet's registry
(``store/registry.py``) promotes or rolls back another; and the candidate shadowed
beside it on live traffic.

Each worker process follows the registry from a thread of its own (a greenlet under
gevent): on PostgreSQL it LISTENs for the registry's notifications and reads the
registry as soon as one arrives; on any database it also reads it every
MODEL_CHECK_SECONDS, which covers SQLite and a notification connection that has
stalled or dropped. The request path only reads an attribute (and, while a candidate
is shadowed, keeps the user for the follower to score).
"""

import contextlib
import logging
import os
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
from flask import Flask, current_app
from sqlalchemy.engine import Engine

from ..metrics.registry import Counter as MetricCounter
from ..metrics.registry import Gauge
from ..segmentation.model import ModelError, SegmentModel
from ..store.engine import StoreUnavailable
from ..store.registry import CHANNEL, ModelRegistry

log = logging.getLogger(__name__)

# How long a wait for notifications runs before it looks whether to stop.
STOP_LATENCY_SECONDS = 0.5

# Users kept for the shadow between two checks, at most: beyond, the shadow skips some
# (its figures are a sample then) rather than hold a worker's memory.
MAX_WAITING_USERS = 200_000

MODEL_INFO = Gauge(
    "nomads_model_info",
    "1 for the model version a worker serves.",
    ["version"],
    multiprocess_mode="liveall",
)
SHADOW_ANSWERS = MetricCounter(
    "nomads_shadow_answers",
    "Answers of the shadowed candidate beside the served model, by agreement.",
    ["shadow_version", "agreed"],
)


class ModelFollower:
    """The served model (and the shadowed candidate) of one process, following the
    registry. A version that fails to load here is refused with a log line, and the
    one served before stays: ``refused`` says which and why (``/health``)."""

    def __init__(self, registry: ModelRegistry, check_seconds: float):
        self.registry = registry
        self.check_seconds = check_seconds
        served, shadowed = registry.following()
        if served is None:
            raise ModelError("the registry serves no model: run `nomads-cluster db upgrade`")
        self.model = registry.load(served)
        self.shadow: SegmentModel | None = None
        self.refused: str | None = None  # why the registry's served version is not served
        self._refused_version: str | None = None  # that version: not loaded again
        self._unshadowable: str | None = None  # a version this code failed to load
        # Users the requests kept for the shadow, and the counts not yet in the registry.
        self._to_compare: list[tuple[str, str, np.ndarray, list[int]]] = []
        self._waiting = 0
        self._agreement: Counter = Counter()
        self._counting = threading.Lock()  # requests add while the follower takes
        self._load_shadow(shadowed)
        self._pid: int | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    # The request path

    def start_in_this_process(self) -> None:
        """Follow the registry from this process (after a fork, anew)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._to_compare, self._waiting = [], 0  # the parent's are its own
            self._thread = threading.Thread(target=self._follow, name="model-follower", daemon=True)
            self._thread.start()

    def compare(self, served: SegmentModel, features: np.ndarray, segments: list[int]) -> None:
        """Keep users (a feature matrix) and the ``segments`` that ``served`` gave them,
        for the follower to score with the shadowed candidate, if any: off the request's
        path, a batch at a time. Never changes an answer."""
        shadow = self.shadow
        if shadow is None or shadow.version == served.version:
            return
        with self._counting:
            if self._waiting < MAX_WAITING_USERS:
                self._to_compare.append((shadow.version, served.version, features, segments))
                self._waiting += len(segments)

    def _score_waiting(self) -> None:
        """Score the users kept by ``compare`` with the candidate, and count them."""
        with self._counting:
            waiting, self._to_compare, self._waiting = self._to_compare, [], 0
        shadow = self.shadow
        by_served: dict[str, tuple[list[np.ndarray], list[int]]] = {}
        for shadow_version, served_version, features, segments in waiting:
            if shadow is not None and shadow_version == shadow.version:
                matrices, served_segments = by_served.setdefault(served_version, ([], []))
                matrices.append(features)
                served_segments.extend(segments)
        for served_version, (matrices, served_segments) in by_served.items():
            candidate, _ = shadow.assign_users(np.vstack(matrices))
            pairs = Counter(zip(served_segments, candidate.tolist(), strict=True))
            agreed = sum(n for (old, new), n in pairs.items() if old == new)
            for (old, new), n in pairs.items():
                self._agreement[shadow.version, served_version, old, new] += n
            if agreed:
                SHADOW_ANSWERS.labels(shadow_version=shadow.version, agreed="yes").inc(agreed)
            if agreed < len(served_segments):
                SHADOW_ANSWERS.labels(shadow_version=shadow.version, agreed="no").inc(
                    len(served_segments) - agreed
                )

    # The following thread

    def stop(self, wait_seconds: float = 5.0) -> None:
        """Stop following, and wait for the thread to finish what it was doing: a
        check still under way would otherwise give its connection back to a pool the
        caller is about to dispose."""
        self._stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(wait_seconds)

    def _follow(self) -> None:
        listener = NotificationListener(self.registry.store.engine)
        try:
            while not self._stopped.is_set():
                listener.wait(self.check_seconds, self._stopped)
                if self._stopped.is_set():
                    return
                try:
                    self.check()
                except Exception:  # this thread must outlive any one failure
                    if not self._stopped.is_set():
                        log.exception("following the model registry failed; trying again")
        finally:
            listener.close()

    def check(self) -> None:
        """Read the registry and swap in what it now serves and shadows; add this
        process's shadow answers to the fleet's counts. A database out of reach
        changes nothing: the next check tries again."""
        try:
            self._flush_agreement()
            served, shadowed = self.registry.following()
            if served is not None and served != self.model.version:
                self._serve(served)
            elif served == self.model.version:
                self.refused = self._refused_version = None
            self._load_shadow(shadowed)
        except StoreUnavailable as exc:
            log.warning("cannot read the model registry, serving %s: %s", self.model.version, exc)

    def _serve(self, version: str) -> None:
        """Swap in ``version``, or refuse it once (it is not loaded again every check)."""
        if version == self._refused_version:
            return
        try:
            model = self.registry.load(version)
        except ModelError as exc:
            self._refused_version = version
            self.refused = f"the registry serves {version}, refused here: {exc}"
            log.error(
                "refusing model %s promoted in the registry, still serving %s: %s",
                version,
                self.model.version,
                exc,
            )
            return
        previous, self.model = self.model, model
        self.refused = self._refused_version = None
        log.info("now serving model %s (was %s)", model.version, previous.version)

    def _load_shadow(self, version: str | None) -> None:
        if version is None or version == self._unshadowable:
            self.shadow = None
        elif self.shadow is None or self.shadow.version != version:
            try:
                self.shadow = self.registry.load(version)
            except ModelError as exc:
                self.shadow, self._unshadowable = None, version
                log.error("cannot shadow model %s: %s", version, exc)

    def _flush_agreement(self) -> None:
        self._score_waiting()
        counts, self._agreement = self._agreement, Counter()
        try:
            self.registry.add_agreement(counts)
        except StoreUnavailable:
            self._agreement.update(counts)  # added at the next check
            raise


class NotificationListener:
    """Waits for the registry's notifications on a connection of its own (PostgreSQL);
    on SQLite, or while that connection is down, waiting is sleeping."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._connection: Any = None
        self._warned = False  # the link's loss is logged once, until it listens again

    def wait(self, seconds: float, stopped: threading.Event) -> None:
        """Until a notification arrives, ``seconds`` have passed or ``stopped`` is set."""
        if self.engine.dialect.name != "postgresql":
            stopped.wait(seconds)
            return
        try:
            connection = self._connection or self._listen()
            self._warned = False
            deadline = time.monotonic() + seconds
            while not stopped.is_set() and (left := deadline - time.monotonic()) > 0:
                timeout = min(left, STOP_LATENCY_SECONDS)
                if any(True for _ in connection.notifies(timeout=timeout, stop_after=1)):
                    return
        except Exception as exc:  # any failure of the link: poll, and listen anew later
            if not self._warned:
                log.warning("model notifications interrupted, polling the registry: %s", exc)
                self._warned = True
            self.close()
            stopped.wait(seconds)

    def _listen(self) -> Any:
        pooled = self.engine.raw_connection()  # with the engine's timeouts
        self._connection = connection = pooled.driver_connection
        pooled.detach()  # the listener's alone, never back in the pool
        connection.autocommit = True
        connection.execute(f"LISTEN {CHANNEL}")
        return connection

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to close cleanly
                connection.close()


def init_app(app: Flask) -> None:
    """Serve the registry's version, filing NOMADS_MODEL_DIR's model first on a
    registry that serves none, and follow the registry's promotions."""
    registry = ModelRegistry(app.extensions["user_store"])
    registry.serve_first(app.config["MODEL_DIR"])
    follower = ModelFollower(registry, float(app.config["MODEL_CHECK_SECONDS"]))
    app.extensions["model_registry"] = registry
    app.extensions["model_follower"] = follower
    app.extensions["segment_model"] = follower.model
    served: dict[str, str | None] = {"version": None}  # per process: copied at fork

    @app.before_request
    def serve_the_registrys_model() -> None:
        follower.start_in_this_process()
        # One model per request: swapped between requests only.
        model = app.extensions["segment_model"] = follower.model
        if model.version != served["version"]:
            if served["version"] is not None:
                MODEL_INFO.labels(version=served["version"]).set(0)
            MODEL_INFO.labels(version=model.version).set(1)
            served["version"] = model.version


def get_model() -> SegmentModel:
    return current_app.extensions["segment_model"]


def get_follower() -> ModelFollower:
    return current_app.extensions["model_follower"]
