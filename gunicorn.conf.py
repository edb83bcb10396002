"""gunicorn's settings for nomads-cluster; gunicorn reads this file from its working
directory, so the Procfile's `gunicorn app_cluster:app` uses it. It binds to $PORT."""

import os
import shutil
import tempfile

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
preload_app = True  # the app and its model load once, before forking: workers share them
timeout = 30  # a worker silent this long is killed and replaced
graceful_timeout = 20  # on restart or stop, time for requests in flight to finish
keepalive = 5

# Metrics from every worker: prometheus_client's multiprocess mode keeps each worker's
# samples in files of this directory, which /metrics adds up. A fresh one per start.
_created_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _created_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="nomads-metrics-")


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # its live gauges leave /metrics


def on_exit(server) -> None:
    if _created_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
