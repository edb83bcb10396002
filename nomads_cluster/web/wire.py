"""What gunicorn writes to the socket, where the service changes it (``install``, called
by ``gunicorn.conf.py``): its own error answers as problems, each answer in one write,
and the Date header formatted once a second."""

import json
import socket
import time

from gunicorn import util
from gunicorn.http import wsgi


def write_problem(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own error answers (a malformed request line, too long a URL, too many
    headers, a bad chunk) as RFC 9457 problems, like the app's, instead of HTML. (No
    "instance": gunicorn does not say which request, if it could read one.)"""
    problem = {"type": "about:blank", "title": reason, "status": status_int}
    body = json.dumps({**problem, "detail": mesg or reason}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/problem+json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin1") + body)


class OneWriteResponse(wsgi.Response):
    """gunicorn's response, its head held back until the body's first bytes and sent
    with them in one write.

    gunicorn writes the head and then the body, two sends for an answer of one piece
    (every JSON answer here): on loopback under load the second send cost about 6 % of
    the throughput of /cluster/preview (docs/performance.md). A streamed (chunked) body,
    a file sent by sendfile and an answer without a body get the head on its own first,
    as before.
    """

    _held_head = b""

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        lines = self.default_headers()
        lines.extend(f"{name}: {value}\r\n" for name, value in self.headers)
        self._held_head = f"{''.join(lines)}\r\n".encode("latin-1")
        self.headers_sent = True

    def _send_held_head(self) -> None:
        head, self._held_head = self._held_head, b""
        if head:
            util.write(self.sock, head)

    def _emit_body(self, data: bytes) -> None:
        if self.chunked:  # each chunk is framed on its own: the head goes first
            self._send_held_head()
            util.write(self.sock, data, chunked=True)
        else:
            head, self._held_head = self._held_head, b""
            util.write(self.sock, head + data)

    def sendfile(self, respiter) -> bool:
        self.send_headers()
        self._send_held_head()
        return super().sendfile(respiter)

    def close(self) -> None:
        self.send_headers()
        self._send_held_head()  # an answer without a body, or an empty one
        super().close()


_gunicorns_http_date = util.http_date
_formatted_date: tuple[int, str] = (-1, "")  # a second and its Date header


def http_date(timestamp: float | None = None) -> str:
    """gunicorn's Date header (RFC 9110's format, to the second), formatted once a
    second rather than for every answer (4 µs each)."""
    global _formatted_date
    if timestamp is not None:
        return _gunicorns_http_date(timestamp)
    now = int(time.time())
    if now != _formatted_date[0]:
        _formatted_date = (now, _gunicorns_http_date(now))
    return _formatted_date[1]


def install() -> None:
    """Into gunicorn, in the master before it forks: its workers then write this way."""
    util.write_error = write_problem
    util.http_date = http_date
    wsgi.Response = OneWriteResponse
