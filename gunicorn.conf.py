"""gunicorn's settings for nomads-cluster; gunicorn reads this file from its working
directory, so the Procfile's `gunicorn app_cluster:app` uses it. It binds to $PORT."""

# gevent's worker, patched before anything else is imported: the app is preloaded
# in this process before forking, so its locks, sockets and sleeps (SQLAlchemy's pool,
# psycopg's waits, the group committer) must be gevent's from the start, not patched
# under them in each worker. A connection costs a greenlet, not a thread or a process:
# a slow client (a phone on a bad network trickling its body) holds nothing else.
import gevent
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
worker_connections = 1000  # per worker: open connections, slow ones included
# gunicorn's control socket sits at one path per user: two servers on a host would
# take over and delete each other's. Nothing here uses it.
control_socket_disable = True
preload_app = True  # the app and its model load once, before forking: workers share them
timeout = 30  # a worker silent this long is killed and replaced
graceful_timeout = 20  # on restart or stop, time for requests in flight to finish
keepalive = 5

# Metrics from every worker: prometheus_client's multiprocess mode keeps each worker's
# samples in files of this directory, which /metrics adds up. A fresh one per start.
_created_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _created_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="nomads-metrics-")


def post_request(worker, req, environ, resp) -> None:
    # Let the other connections' greenlets run before this one reads its next request.
    # A keep-alive connection whose next request is already in the socket never blocks,
    # so without this its greenlet serves it again and again while others wait: at 16
    # connections /cluster/preview had a p99 of 0.3-1 s for a median of 1.3 ms. With it,
    # p99 20-30 ms (docs/performance.md).
    gevent.sleep(0)


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # its live gauges leave /metrics


def on_exit(server) -> None:
    if _created_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
