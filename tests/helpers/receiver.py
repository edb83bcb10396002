"""A webhook receiver for the tests: a real HTTP server on loopback that verifies each
delivery's signature with the Standard Webhooks library, and can be told to fail, to
time out, or to answer 410 Gone."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes, base64


class Receiver:
    """Deliveries received, in order: (webhook-id, events); ``answers`` queues the
    statuses to give before accepting again ("timeout": no answer in time)."""

    def __init__(self, secret: str = SECRET):
        self.verifier = Webhook(secret)
        self.deliveries: list[tuple[str, list[dict]]] = []
        self.bad_signatures = 0
        self.answers: list[int | str] = []
        self.hang_seconds = 3.0
        self.down = False  # while set, every delivery gets a 503
        self.requests = 0  # deliveries begun, answered or not
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.requests += 1
                    answer = receiver.answers.pop(0) if receiver.answers else 204
                if receiver.down:
                    answer = 503
                if answer == "timeout":
                    time.sleep(receiver.hang_seconds)
                    answer = 204  # too late: the worker has given up on this try
                elif answer == 204:
                    try:
                        payload = receiver.verifier.verify(body, dict(self.headers))
                    except Exception:
                        receiver.bad_signatures += 1
                        answer = 400
                    else:
                        with receiver._lock:
                            receiver.deliveries.append(
                                (self.headers["webhook-id"], payload["events"])
                            )
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def event_ids(self) -> list[int]:
        with self._lock:
            return [event["id"] for _, events in self.deliveries for event in events]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def events_json(body: bytes) -> list[dict]:
    return json.loads(body)["events"]
