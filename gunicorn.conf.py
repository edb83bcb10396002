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

import gc  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
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
# What gunicorn refuses before the app sees a request, set here on purpose (gunicorn's
# own defaults): a request line over 4094 bytes is a 414, over 100 header fields or a
# field over 8190 bytes a 431 or 400; all answered as problems (below).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190


class _NoQueryStrings(logging.Filter):
    """gunicorn logs a request it refuses verbatim ("Invalid request from ip=...: ...");
    a query string may carry personal data: it is cut from the log line."""

    QUERY = re.compile(r"\?[^\s'\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Invalid request from"):
            record.msg, record.args = self.QUERY.sub("?...", message), ()
        return True


logging.getLogger("gunicorn.error").addFilter(_NoQueryStrings())

# Metrics from every worker: prometheus_client's multiprocess mode keeps each worker's
# samples in files of this directory, which /metrics adds up. A fresh one per start.
_created_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _created_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="nomads-metrics-")

# gunicorn's own error answers as problems (wire.py). Imported
# only now: the package imports prometheus_client, which picks its mode on import.
from nomads_cluster.web import wire  # noqa: E402

wire.install()


def when_ready(server) -> None:
    # The preloaded app's objects, moved out of the garbage collector's reach before
    # the workers fork: a collection in a worker would otherwise write to every one of
    # them (its bookkeeping lives in the objects' headers) and copy the pages they
    # share with this process (the bench reports the server's PSS).
    gc.freeze()


def post_request(worker, req, environ, resp) -> None:
    # Let the other connections be served before this one reads its next request. A
    # keep-alive connection whose next request is already in its socket never blocks,
    # so without this its greenlet serves it again and again while others wait, and
    # the p99 latency grows far beyond the median. gevent.idle() waits until the event
    # loop has polled the sockets and run every greenlet ready; gevent.sleep(0) only
    # queues this one behind those already ready, which leaves the sockets unpolled.
    gevent.idle()


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # its live gauges leave /metrics


def on_exit(server) -> None:
    if _created_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
