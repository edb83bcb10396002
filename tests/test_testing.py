import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nomads_cluster.testing import free_port, wait_until_healthy


def test_free_port_can_be_bound():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        assert sock.getsockname()[1] == port


def test_waiting_stops_when_the_server_has_exited():
    server = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    server.wait()
    with pytest.raises(RuntimeError, match="exited with 3"):
        wait_until_healthy(free_port(), server=server)


def test_waiting_gives_up_when_nothing_answers():
    with pytest.raises(RuntimeError, match="nothing healthy"):
        wait_until_healthy(free_port(), seconds=0.3)


class HealthyOnSecondAsk(BaseHTTPRequestHandler):
    asked = 0

    def do_GET(self):
        HealthyOnSecondAsk.asked += 1
        self.send_response(200 if HealthyOnSecondAsk.asked >= 2 else 503)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_waiting_returns_once_health_answers_200():
    server = ThreadingHTTPServer(("127.0.0.1", 0), HealthyOnSecondAsk)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        wait_until_healthy(server.server_address[1], seconds=10)
    finally:
        server.shutdown()
        server.server_close()
    assert HealthyOnSecondAsk.asked == 2
