"""gunicorn's threaded worker, with each request read in full before a thread takes it.

gthread hands a connection to a thread as soon as it is readable, and the thread then
reads the request with blocking calls: a client that trickles its body (a phone on a
bad network, or an attacker) holds a thread until its last byte, and a few of them
hold them all. Here the worker's event loop reads every request, head and body,
without blocking; only a complete request goes to a thread, so threads run the app
and never wait on a client. A request that is not complete within
NOMADS_REQUEST_READ_TIMEOUT seconds is answered 408 and closed.

Waiting stops early where more bytes cannot help: a head over MAX_HEAD_BYTES is
answered 431 here; a body declared or grown larger than the app accepts goes to the
app at once (which answers 413 without reading it); framing that gunicorn's parser
will refuse goes to the parser (400).

Used as ``worker_class`` in gunicorn.conf.py. TLS and HTTP/2 (which the service does
not configure: Heroku's router and nginx end TLS) fall back to gthread's own reading.
"""

import errno
import json
import re
import selectors
import time
from functools import partial

from gunicorn import http
from gunicorn.workers.gthread import TConn, ThreadWorker

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; gunicorn's own limits are lower
DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_MAX_BODY = 1024 * 1024
_RECV_BYTES = 64 * 1024
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class RequestFramer:
    """Whether the bytes received on a connection hold a whole HTTP/1.x request.

    ``feed`` returns True once they do, or once waiting for more cannot change the
    answer (the body is over ``max_body``, or the framing is malformed: the parser and
    the app refuse those without the rest). It keeps its place between calls, so a
    body trickled a byte at a time is scanned once.
    """

    def __init__(self, max_body: int, max_head: int = MAX_HEAD_BYTES):
        self.max_body = max_body
        self.max_head = max_head
        self.buffer = bytearray()
        self.head_end: int | None = None
        self.head_too_large = False
        self._length: int | None = None  # Content-Length, when not chunked
        self._chunked = False
        self._chunk_at = 0  # where the next chunk-size line (or trailer line) starts
        self._chunk_bytes = 0
        self._in_trailers = False

    def feed(self, data: bytes) -> bool:
        searched = max(0, len(self.buffer) - 3)
        self.buffer += data
        if self.head_end is None:
            end = self.buffer.find(b"\r\n\r\n", searched)
            if end < 0:
                self.head_too_large = len(self.buffer) > self.max_head
                return self.head_too_large
            self.head_end = self._chunk_at = end + 4
            if not self._read_head(bytes(self.buffer[:end])):
                return True
        if self._chunked:
            return self._chunks_complete()
        if self._length is None:
            return True  # no body
        return self._length > self.max_body or len(self.buffer) - self.head_end >= self._length

    def _read_head(self, head: bytes) -> bool:
        """Take the body's framing from the headers; False when it is malformed."""
        lengths, codings = set(), []
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                lengths.add(value.strip())
            elif name == b"transfer-encoding":
                codings += [c.strip().lower() for c in value.split(b",")]
        if codings:
            self._chunked = codings[-1] == b"chunked"
            return self._chunked and not lengths
        if len(lengths) > 1:
            return False
        if lengths:
            (length,) = lengths
            if not length.isdigit() or len(length) > 18:
                return False
            self._length = int(length)
        return True

    def _chunks_complete(self) -> bool:
        buffer = self.buffer
        while True:
            line_end = buffer.find(b"\r\n", self._chunk_at)
            if line_end < 0:
                return len(buffer) - self._chunk_at > self.max_head
            line = bytes(buffer[self._chunk_at : line_end])
            if self._in_trailers:
                if not line:
                    return True  # the empty line after the last chunk's trailers
                self._chunk_at = line_end + 2
                continue
            size_text = line.split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_text):
                return True  # malformed: the parser answers 400
            size = int(size_text, 16)
            if self._chunk_bytes + size > self.max_body:
                return True  # too large: the app answers 413
            if size == 0:
                self._in_trailers = True
                self._chunk_at = line_end + 2
                continue
            chunk_end = line_end + 2 + size + 2
            if len(buffer) < chunk_end:
                return False
            self._chunk_bytes += size
            self._chunk_at = chunk_end


def problem_bytes(status: int, reason: str, detail: str) -> bytes:
    """A complete HTTP answer with an RFC 9457 problem, closing the connection."""
    body = json.dumps(
        {"type": "about:blank", "title": reason, "status": status, "detail": detail}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class RequestBufferingWorker(ThreadWorker):
    """gthread, with requests read by the event loop (see the module's docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reading: dict[TConn, tuple[RequestFramer, float]] = {}
        self.read_timeout = DEFAULT_READ_TIMEOUT
        self.max_body = DEFAULT_MAX_BODY
        self.buffering = not self.cfg.is_ssl and "h2" not in self.cfg.http_protocols

    def run(self) -> None:
        # The app's own (validated) settings: the body limits it enforces, and how long
        # a request may take to arrive.
        settings = getattr(self.wsgi, "config", {})
        self.read_timeout = float(settings.get("REQUEST_READ_TIMEOUT", DEFAULT_READ_TIMEOUT))
        limits = [settings.get(k) for k in ("MAX_CONTENT_LENGTH", "BATCH_MAX_CONTENT_LENGTH")]
        self.max_body = max((int(v) for v in limits if v), default=DEFAULT_MAX_BODY)
        super().run()

    def enqueue_req(self, conn: TConn) -> None:
        if not self.buffering:
            super().enqueue_req(conn)
            return
        framer = RequestFramer(self.max_body)
        # Bytes a kept-alive connection already sent behind its previous request.
        held = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        if held and framer.feed(held):
            self._dispatch(conn, framer)
            return
        conn.sock.setblocking(False)
        self.reading[conn] = (framer, time.monotonic() + self.read_timeout)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _on_readable(self, conn: TConn, _sock: object) -> None:
        framer, _deadline = self.reading[conn]
        try:
            data = conn.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:  # the client closed its side
            if framer.buffer:
                self._refuse(conn, 400, "Bad Request", "the request ended before it was complete")
            else:
                self._close(conn)
            return
        if not framer.feed(data):
            return
        if framer.head_too_large:
            self._refuse(
                conn, 431, "Request Header Fields Too Large",
                f"the request line and headers exceed {MAX_HEAD_BYTES} bytes",
            )  # fmt: skip
            return
        self._stop_reading(conn)
        self._dispatch(conn, framer)

    def _dispatch(self, conn: TConn, framer: RequestFramer) -> None:
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(framer.buffer))
        conn.data_ready = True  # gthread's handle() must not wait for data again
        super().enqueue_req(conn)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        late = [conn for conn, (_, deadline) in self.reading.items() if deadline <= now]
        for conn in late:
            if self.reading[conn][0].buffer:
                self._refuse(
                    conn, 408, "Request Timeout",
                    f"the request did not arrive in full within {self.read_timeout:g} seconds",
                )  # fmt: skip
            else:
                self._close(conn)  # a connection that never sent anything

    def _stop_reading(self, conn: TConn) -> None:
        del self.reading[conn]
        self.poller.unregister(conn.sock)

    def _refuse(self, conn: TConn, status: int, reason: str, detail: str) -> None:
        try:
            conn.sock.send(problem_bytes(status, reason, detail))
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EPIPE, errno.ECONNRESET):
                self.log.debug("could not send %s: %s", status, exc)
        self._close(conn)

    def _close(self, conn: TConn) -> None:
        self._stop_reading(conn)
        self.nr_conns -= 1
        conn.close()
