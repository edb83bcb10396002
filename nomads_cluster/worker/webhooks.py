"""Delivering the change feed to the app's webhook: in order, in batches, signed as the
Standard Webhooks specification says, at least once.

Where delivery stands is kept in the database (``webhook_deliveries``, one row per
receiver URL), so a worker that restarts, or another worker that takes over, goes on
from the last batch the receiver acknowledged: at most the batch in flight is sent
again, with the same ``webhook-id``. One worker delivers at a time (a lease on the
row). A receiver that fails or times out is retried with a growing pause for up to
RETRY_FOR; a 410 Gone stops deliveries.
"""

import json
import logging
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from standardwebhooks import Webhook

from ..store.engine import as_utc
from ..store.events import Event, oldest_kept, read_events
from ..store.tables import webhook_deliveries
from ..store.users import UserStore

log = logging.getLogger(__name__)

RETRY_FOR = timedelta(days=3)  # a receiver failing longer than this is given up
FIRST_RETRY_SECONDS = 1.0  # then doubled at each failure...
LONGEST_RETRY_SECONDS = 600.0  # ...up to this
IDLE_SECONDS = 0.25  # nothing to send: look again after this (the lag of a quiet feed)
USER_AGENT = "nomads-cluster-webhooks"


def worker_name() -> str:
    return f"{os.environ.get('DYNO') or socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Attempt:
    """What one try at a batch came to."""

    status: int | None  # the receiver's HTTP status; None: no answer (refused, timed out)
    error: str = ""

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def retry_pause(attempts: int) -> float:
    """Seconds before the next try, after ``attempts`` failed ones."""
    return min(FIRST_RETRY_SECONDS * 2 ** (attempts - 1), LONGEST_RETRY_SECONDS)


def batch_body(events: list[Event]) -> bytes:
    return json.dumps({"events": [event.as_json() for event in events]}).encode()


class WebhookDelivery:
    """Sends the feed to one receiver, a batch per step."""

    def __init__(
        self, store: UserStore, url: str, secret: str, batch_size: int = 100, timeout: float = 10
    ):
        self.store, self.url, self.batch_size, self.timeout = store, url, batch_size, timeout
        self.signer = Webhook(secret)
        self.me = worker_name()
        # Renewed at every step; a worker that dies holds it this long at most. Longer
        # than a step can take (a delivery's timeout), with room to spare.
        self.lease = timedelta(seconds=3 * timeout + 5)
        self._stopped_logged = False

    def step(self) -> float:
        """Deliver the next batch if this worker holds the lease; the seconds to wait
        before the next step (0: more is ready)."""
        now = datetime.now(UTC)
        if not self._lease(now):
            return self.lease.total_seconds() / 4
        state = self.state()
        if state.stopped_at is not None:
            if not self._stopped_logged:
                log.error("webhook deliveries to %s stopped: %s", self.url, state.stopped_reason)
                self._stopped_logged = True
            return self.lease.total_seconds() / 4
        if state.next_attempt_at is not None and as_utc(state.next_attempt_at) > now:
            return (as_utc(state.next_attempt_at) - now).total_seconds()
        events = self.store.run(
            lambda conn: read_events(conn, state.delivered_through, self.batch_size), write=False
        )
        if state.sending_through is not None:  # the batch tried before, as it was
            events = [event for event in events if event.id <= state.sending_through]
        if not events:
            return IDLE_SECONDS
        if state.sending_through is None:
            self._update(sending_through=events[-1].id)
        attempt = self.send(events)
        if attempt.delivered:
            self._update(
                delivered_through=events[-1].id,
                sending_through=None,
                attempts=0,
                next_attempt_at=None,
                failing_since=None,
                delivered_events=webhook_deliveries.c.delivered_events + len(events),
            )
            return 0.0
        return self._failed(state, attempt, events, now)

    def send(self, events: list[Event]) -> Attempt:
        """POST one batch, signed; what came of it."""
        body = batch_body(events)
        message_id = f"evt_{events[0].id}_{events[-1].id}"
        timestamp = datetime.now(UTC)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": message_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": self.signer.sign(message_id, timestamp, body),
        }
        request = urllib.request.Request(self.url, body, headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
                return Attempt(response.status)
        except urllib.error.HTTPError as exc:
            return Attempt(exc.code, f"HTTP {exc.code}")
        except (OSError, ValueError) as exc:  # refused, reset, timed out, a bad URL
            return Attempt(None, f"{type(exc).__name__}: {exc}")

    def _failed(self, state: sa.Row, attempt: Attempt, events: list[Event], now: datetime) -> float:
        failing_since = as_utc(state.failing_since) if state.failing_since else now
        attempts = state.attempts + 1
        stop_reason = None
        if attempt.status == 410:
            stop_reason = f"the receiver answered 410 Gone at {now.isoformat()}"
        elif now - failing_since > RETRY_FOR:
            stop_reason = f"the receiver failed for over {RETRY_FOR.days} days ({attempt.error})"
        if stop_reason is not None:
            log.error(
                "webhook deliveries to %s stop: %s; events from %d on are not delivered "
                "(set NOMADS_WEBHOOK_URL to another receiver to start again)",
                self.url,
                stop_reason,
                events[0].id,
            )
            self._stopped_logged = True
            self._update(stopped_at=now, stopped_reason=stop_reason, attempts=attempts)
            return self.lease.total_seconds() / 4
        pause = retry_pause(attempts)
        log.warning(
            "webhook batch %d-%d to %s failed (%s), try %d; next in %.0f s",
            events[0].id,
            events[-1].id,
            self.url,
            attempt.error,
            attempts,
            pause,
        )
        self._update(
            attempts=attempts,
            failing_since=failing_since,
            next_attempt_at=now + timedelta(seconds=pause),
            failed_attempts=webhook_deliveries.c.failed_attempts + 1,
        )
        return pause

    def _lease(self, now: datetime) -> bool:
        """Take or renew the lease on this receiver's row (made on first sight)."""
        row = {
            "url": self.url,
            "delivered_through": 0,
            "attempts": 0,
            "delivered_events": 0,
            "failed_attempts": 0,
        }
        mine = sa.or_(
            webhook_deliveries.c.leased_by.is_(None),
            webhook_deliveries.c.leased_by == self.me,
            webhook_deliveries.c.leased_until < now,
        )
        lease = (
            webhook_deliveries.update()
            .where(webhook_deliveries.c.url == self.url)
            .where(mine)
            .values(leased_by=self.me, leased_until=now + self.lease)
        )

        def work(conn: sa.Connection) -> bool:
            # A new receiver gets every event kept; two workers may meet here.
            first = self.store.insert(webhook_deliveries).values(
                {**row, "delivered_through": oldest_kept(conn)}
            )
            conn.execute(first.on_conflict_do_nothing(index_elements=["url"]))
            return conn.execute(lease).rowcount == 1

        return self.store.run(work, write=True)

    def state(self) -> sa.Row:
        """This receiver's row of ``webhook_deliveries``: where its deliveries stand."""
        query = sa.select(webhook_deliveries).where(webhook_deliveries.c.url == self.url)
        return self.store.run(lambda conn: conn.execute(query).one(), write=False)

    def _update(self, **values: object) -> None:
        update = (
            webhook_deliveries.update()
            .where(webhook_deliveries.c.url == self.url)
            .where(webhook_deliveries.c.leased_by == self.me)
            .values(**values)
        )
        self.store.run(lambda conn: conn.execute(update), write=True)
