"""Clients on bad networks and odd framings, against gunicorn as the Procfile runs it:
trickled bodies hold no worker, chunked bodies are read to their limit, and a body
that cannot be read in full is refused, never processed."""

import http.client
import json
import socket

import pytest
from conftest import READ_API_KEY, READER
from helpers.live_server import run_gunicorn

TRICKLERS = 50


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One gunicorn (2 workers, SQLite) for the module's tests."""
    work = tmp_path_factory.mktemp("slow-clients")
    env = {
        "NOMADS_DATABASE_URL": f"sqlite:///{work / 'store.sqlite3'}",
        "NOMADS_READ_API_KEY": READ_API_KEY,
    }
    with run_gunicorn(env, work / "gunicorn.log") as port:
        yield port


def raw_request(port: int, head: bytes, body_parts=(), half_close: bool = False) -> bytes:
    """Send a request as given, byte for byte; the answer's head and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_answer(sock)


def read_answer(sock: socket.socket) -> bytes:
    """One HTTP answer with a Content-Length, read off the socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":", 1)[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def status_and_json(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def chunked(parts: list[bytes]) -> list[bytes]:
    return [b"%x\r\n%s\r\n" % (len(part), part) for part in parts] + [b"0\r\n\r\n"]


CHUNKED_HEAD = b"POST /cluster HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"


def user_body(user_id: str, padding: int = 0) -> bytes:
    body = json.dumps({"_id": user_id, "interests": {"surf": True, "coffee": True}})
    return (body[:-1] + " " * padding + "}").encode()


def get(port: int, path: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers=READER)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_trickled_bodies_hold_no_worker(server):
    """50 clients stop half-way through their bodies; everyone else is still served,
    and each of the 50 gets its normal answer once its body is in."""
    bodies = [user_body(f"trickler-{n}") for n in range(TRICKLERS)]
    tricklers = []
    try:
        for body in bodies:
            sock = socket.create_connection(("127.0.0.1", server), timeout=30)
            tricklers.append(sock)
            sock.sendall(
                b"POST /cluster HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            sock.sendall(body[: len(body) // 2])
        # Both workers have half-read requests from all 50: another client is served.
        assert get(server, "/health")[0] == 200
        status, answer = status_and_json(
            raw_request(
                server,
                b"POST /cluster HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n"
                % len(user_body("meanwhile")),
                [user_body("meanwhile")],
            )
        )
        assert status == 200 and answer["_id"] == "meanwhile"
        for sock, body in zip(tricklers, bodies, strict=True):
            for byte in body[len(body) // 2 :]:
                sock.sendall(bytes([byte]))
        answers = [status_and_json(read_answer(sock)) for sock in tricklers]
    finally:
        for sock in tricklers:
            sock.close()
    assert [status for status, _ in answers] == [200] * TRICKLERS
    assert [answer["_id"] for _, answer in answers] == [f"trickler-{n}" for n in range(TRICKLERS)]
    assert get(server, "/users/trickler-49")[0] == 200


def test_a_chunked_body_is_read_whole(server):
    body = user_body("chunked-ok")
    status, answer = status_and_json(
        raw_request(server, CHUNKED_HEAD, chunked([body[:7], body[7:]]))
    )
    assert status == 200 and answer["_id"] == "chunked-ok"
    assert get(server, "/users/chunked-ok")[0] == 200


@pytest.mark.parametrize("padding", [20 * 1024, 20 * 1024 * 1024])
def test_a_chunked_body_over_the_limit_is_refused_not_truncated(server, padding):
    """A valid body padded past 16 KiB is a 413, never cut to its first 16 KiB and
    stored, nor answered "the body is empty" when much longer."""
    user_id = f"chunked-{padding}"
    body = user_body(user_id, padding)
    parts = [body[i : i + 64 * 1024] for i in range(0, len(body), 64 * 1024)]
    status, problem = status_and_json(raw_request(server, CHUNKED_HEAD, chunked(parts)))
    assert status == 413
    assert "16384 bytes" in problem["detail"]
    assert get(server, f"/users/{user_id}")[0] == 404


def test_malformed_chunks_are_a_400_problem(server):
    status, problem = status_and_json(
        raw_request(server, CHUNKED_HEAD, [b"zz\r\nabc\r\n0\r\n\r\n"])
    )
    assert status == 400
    assert problem["title"] == "Unreadable body"


def test_a_body_shorter_than_its_content_length_is_refused(server):
    head = b"POST /cluster HTTP/1.1\r\nHost: test\r\nContent-Length: 500\r\n\r\n"
    body = user_body("short")
    status, problem = status_and_json(raw_request(server, head, [body], half_close=True))
    assert status == 400
    assert f"after {len(body)} of the 500 bytes" in problem["detail"]
    assert get(server, "/users/short")[0] == 404
