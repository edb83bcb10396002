"""The worker process (``nomads-cluster worker``, the Procfile's ``worker``): delivers
the change feed to the app's webhook and prunes old events. It serves no request."""

import logging
import threading
import time
from datetime import timedelta

from ..store.engine import StoreUnavailable
from ..store.events import prune_events
from ..store.users import UserStore
from .webhooks import WebhookDelivery

log = logging.getLogger(__name__)

PRUNE_EVERY_SECONDS = 600.0
IDLE_SECONDS = 5.0  # without a webhook, how often it looks for work (pruning)


def run(store: UserStore, config: dict, stop: threading.Event) -> None:
    """Until ``stop``: deliver (when NOMADS_WEBHOOK_URL is set) and prune."""
    delivery = None
    if config["WEBHOOK_URL"]:
        delivery = WebhookDelivery(
            store,
            config["WEBHOOK_URL"],
            config["WEBHOOK_SECRET"],
            int(config["WEBHOOK_BATCH_SIZE"]),
            float(config["WEBHOOK_TIMEOUT"]),
        )
        log.info("delivering events to %s", config["WEBHOOK_URL"])
    else:
        log.info("NOMADS_WEBHOOK_URL is not set: events are kept for the feed only")
    keep = timedelta(days=float(config["EVENTS_RETENTION_DAYS"]))
    next_prune = 0.0
    while not stop.is_set():
        pause = IDLE_SECONDS
        try:
            if time.monotonic() >= next_prune:
                pruned = store.run(lambda conn: prune_events(conn, keep), write=True)
                if pruned:
                    log.info("pruned %d events older than %s", pruned, keep)
                next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
            if delivery is not None:
                pause = delivery.step()
        except StoreUnavailable as exc:
            log.warning("the database is unavailable, trying again: %s", exc)
        stop.wait(pause)
