"""Helpers for running the service on loopback: the tests, the benchmark and the soak
test start real servers and wait for them the same way."""

import http.client
import socket
import subprocess
import time


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
