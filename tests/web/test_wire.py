"""gunicorn's response as the service changes it: the head and a body of one piece in
one write; every other kind of answer on the wire as gunicorn sends it."""

import time

from gunicorn import util
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from nomads_cluster.web.wire import OneWriteResponse, http_date


class RecordingSocket:
    """What a response writes, one item per send."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def sendfile(self, file, offset: int = 0, count: int | None = None) -> None:
        file.seek(offset)
        self.sent.append(file.read(count))


def started_response(response_class, method: str, headers: list[tuple[str, str]],
                     version: str = "1.1") -> tuple[wsgi.Response, RecordingSocket]:  # fmt: skip
    """A response to one parsed request, started, over a socket that records its sends."""
    cfg = Config()
    raw = f"{method} /health HTTP/{version}\r\nHost: x\r\n\r\n".encode()
    request = next(RequestParser(cfg, [raw], ("127.0.0.1", 1)))
    sock = RecordingSocket()
    response = response_class(request, sock, cfg)
    response.start_response("200 OK", headers)
    return response, sock


def respond(response_class, method: str, headers: list[tuple[str, str]], body: list[bytes],
            version: str = "1.1") -> list[bytes]:  # fmt: skip
    """The sends of an answer to one request, written as gunicorn's workers write it."""
    response, sock = started_response(response_class, method, headers, version)
    for piece in body:
        response.write(piece)
    response.close()
    return sock.sent


SIZED = [("Content-Type", "application/json"), ("Content-Length", "11")]


def test_a_body_of_one_piece_goes_out_with_its_head_in_one_write():
    sent = respond(OneWriteResponse, "POST", SIZED, [b'{"ok":true}'])
    assert len(sent) == 1
    assert sent[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert sent[0].endswith(b"\r\n\r\n" + b'{"ok":true}')


def test_the_bytes_on_the_wire_are_gunicorns_own():
    """Only the number of writes changes: joined, they are what gunicorn sends."""
    for method, headers, body, version in [
        ("POST", SIZED, [b'{"ok":true}'], "1.1"),
        ("POST", SIZED, [b'{"ok":', b"true}"], "1.1"),
        ("HEAD", SIZED, [b'{"ok":true}'], "1.1"),
        ("GET", [("Content-Type", "text/plain")], [b"abc", b"", b"def"], "1.1"),  # chunked
        ("GET", [("Content-Type", "text/plain")], [b"abc", b"def"], "1.0"),  # till close
        ("GET", [("Content-Length", "0")], [], "1.1"),
    ]:
        ours = respond(OneWriteResponse, method, headers, body, version)
        theirs = respond(wsgi.Response, method, headers, body, version)
        assert b"".join(ours) == without_date(b"".join(theirs), ours), (method, body)


def without_date(theirs: bytes, ours: list[bytes]) -> bytes:
    """Their bytes with our Date header (the two answers may straddle a second)."""
    date = next(line for line in b"".join(ours).split(b"\r\n") if line.startswith(b"Date: "))
    lines = theirs.split(b"\r\n")
    return b"\r\n".join(date if line.startswith(b"Date: ") else line for line in lines)


def test_a_streamed_body_is_sent_after_its_head_chunk_by_chunk():
    sent = respond(OneWriteResponse, "GET", [("Content-Type", "text/plain")], [b"abc", b"def"])
    assert b"\r\nTransfer-Encoding: chunked\r\n" in sent[0]
    assert sent[0].endswith(b"\r\n\r\n")
    assert sent[1:] == [b"3\r\nabc\r\n", b"3\r\ndef\r\n", b"0\r\n\r\n"]


def test_an_answer_without_a_body_sends_its_head_when_closed():
    sent = respond(OneWriteResponse, "HEAD", SIZED, [b'{"ok":true}'])
    assert len(sent) == 1
    assert sent[0].endswith(b"Content-Length: 11\r\n\r\n")


def test_a_file_is_sent_after_its_head(tmp_path):
    response, sock = started_response(OneWriteResponse, "GET", [("Content-Length", "5")])
    (tmp_path / "app.js").write_bytes(b"hello")
    with (tmp_path / "app.js").open("rb") as file:
        assert response.sendfile(wsgi.FileWrapper(file))
    response.close()
    sent = sock.sent
    assert len(sent) == 2
    assert sent[0].startswith(b"HTTP/1.1 200 OK\r\n") and sent[0].endswith(b"\r\n\r\n")
    assert sent[1] == b"hello"


def test_the_date_header_is_gunicorns_for_the_current_second():
    before = util.http_date(int(time.time()))
    date = http_date()
    after = util.http_date(int(time.time()))
    assert date in (before, after)
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"  # a given time: as gunicorn's
