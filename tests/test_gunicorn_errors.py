"""What gunicorn answers itself, before the app sees a request: problems, not HTML,
and no query string of a refused request in its log."""

import json
import socket

import pytest
from helpers.live_server import run_gunicorn


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("gunicorn-errors")
    log = work / "gunicorn.log"
    with run_gunicorn({"NOMADS_DATABASE_URL": f"sqlite:///{work / 'store.sqlite3'}"}, log) as port:
        yield port, log


def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(raw)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /health?secret=abc HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (
            b"GET /health HTTP/1.1\r\n"
            + b"".join(b"X-%d: y\r\n" % n for n in range(150))
            + b"\r\n",
            431,
        ),
        (b"GET /health HTTP/1.1\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n", 431),
        (b"POST /cluster HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ],
    ids=["request-line", "long-url", "many-headers", "big-header", "bad-chunk"],
)
def test_gunicorns_own_errors_are_problems(server, raw, status):
    port, _ = server
    answered, headers, body = exchange(port, raw)
    assert answered == status
    assert headers["Content-Type"] == "application/problem+json"
    assert int(headers["Content-Length"]) == len(body)
    problem = json.loads(body)
    assert problem["status"] == status and problem["title"] and problem["detail"]


def test_a_refused_request_line_is_logged_without_its_query_string(server):
    port, log = server
    exchange(port, b"GET /users/x?email=someone@example.org HTTP/1.1 junk\r\nHost: x\r\n\r\n")
    text = log.read_text()
    assert "Invalid request from" in text
    assert "someone@example.org" not in text
