"""Helpers for running the service on loopback: the tests, the benchmark and the soak
test start real servers and wait for them the same way, and receive the change feed's
webhooks with the same receiver."""

import http.client
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(
    port: int, seconds: float = 30, server: subprocess.Popen | None = None
) -> None:
    """Return once GET /health answers 200 on the port; RuntimeError after `seconds`,
    or as soon as `server` (the process expected to answer) has exited."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {server.returncode}")
        time.sleep(0.1)
    raise RuntimeError(f"nothing healthy on port {port} after {seconds} s")


class WebhookReceiver:
    """A receiver of the change feed's webhooks on loopback that verifies every
    delivery's signature with the Standard Webhooks library. ``deliveries`` holds what
    it accepted, in order: (webhook-id, events, time of arrival). It can be told to
    answer otherwise: ``answers`` queues statuses to give first ("timeout": answer too
    late, after ``hang_seconds``), and while ``down`` every delivery gets a 503."""

    def __init__(self, secret: str):
        from standardwebhooks import Webhook

        self.verifier = Webhook(secret)
        self.deliveries: list[tuple[str, list[dict], float]] = []
        self.bad_signatures = 0
        self.requests = 0  # deliveries begun, answered or not
        self.answers: list[int | str] = []
        self.hang_seconds = 3.0
        self.down = False
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(receiver.receive(body, dict(self.headers)))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass  # the tests' output is the receiver's record, not a log

        return Handler

    def receive(self, body: bytes, headers: dict[str, str]) -> int:
        """The status to answer a delivery with, once it is recorded (or refused)."""
        headers = {name.lower(): value for name, value in headers.items()}
        with self._lock:
            self.requests += 1
            answer = self.answers.pop(0) if self.answers else 204
        if self.down:
            return 503
        if answer == "timeout":
            time.sleep(self.hang_seconds)
            return 204  # too late: the worker has given up on this try
        if answer != 204:
            return int(answer)
        try:
            payload = self.verifier.verify(body, headers)
        except Exception:  # forged, altered or too old: the library says which
            self.bad_signatures += 1
            return 400
        with self._lock:
            self.deliveries.append((headers["webhook-id"], payload["events"], time.time()))
        return 204

    def event_ids(self) -> list[int]:
        """The ids of the events accepted, in the order they came (repeats included)."""
        with self._lock:
            return [event["id"] for _, events, _ in self.deliveries for event in events]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
