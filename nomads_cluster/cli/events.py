"""The change feed's commands: the worker that delivers it, and the feed itself."""

import json
import signal
import threading
import time

import click

from .service import database, settings


@click.command()
def worker() -> None:
    """Deliver the change feed to NOMADS_WEBHOOK_URL, signed with NOMADS_WEBHOOK_SECRET,
    and prune the events older than NOMADS_EVENTS_RETENTION_DAYS; until stopped (the
    Procfile's worker process)."""
    import logging

    from ..worker import run

    with settings() as app:
        config = dict(app.config)
    # The service's own lines at its level; the libraries' (Alembic's) only when they warn.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("nomads_cluster").setLevel(config["LOG_LEVEL"])
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # Heroku stops a dyno with SIGTERM
        signal.signal(signum, lambda *_: stop.set())
    with database() as store:
        run(store, config, stop)


@click.command()
@click.option(
    "--after", type=click.IntRange(0), help="Events after this id [default: the oldest kept]."
)
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option(
    "--follow", is_flag=True, help="Keep printing new events as they come (Ctrl-C stops)."
)
def events(after: int | None, limit: int, follow: bool) -> None:
    """Print the change feed, one JSON event per line, in id order."""
    from ..store.events import oldest_kept, read_events

    with database() as store:
        if after is None:
            after = store.run(oldest_kept, write=False)
        cursor = after
        while True:
            found = store.run(
                lambda conn, since=cursor: read_events(conn, since, limit), write=False
            )
            for event in found:
                click.echo(json.dumps(event.as_json()))
            if found:
                cursor = found[-1].id
            elif follow:
                time.sleep(1)
            else:
                return
