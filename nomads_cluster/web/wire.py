"""What gunicorn writes to the socket, where the service changes it (``gunicorn.conf.py``
installs both): its own error answers as problems, and each answer in one write."""

import json
import socket

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
        if self._held_head and not self.chunked:
            head, self._held_head = self._held_head, b""
            data = head + data
        self._send_held_head()
        util.write(self.sock, data, self.chunked)

    def sendfile(self, respiter) -> bool:
        self.send_headers()
        self._send_held_head()
        return super().sendfile(respiter)

    def close(self) -> None:
        self.send_headers()
        self._send_held_head()  # an answer without a body, or an empty one
        super().close()
