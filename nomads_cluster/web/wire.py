"""gunicorn's own error answers (``install``, called by ``gunicorn.conf.py``) as
problems, like the app's.

gunicorn answers a request it cannot parse itself, before any app code runs, with an
HTML page, and offers no hook to change it: ``install`` replaces the one function that
writes it, ``gunicorn.util.write_error``. tests/test_gunicorn_errors.py sends such
requests to a real server of the pinned gunicorn, so an upgrade that changes this
function fails there, not in production.
"""

import json
import socket

from gunicorn import util


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


def install() -> None:
    """Into gunicorn, in the master before it forks: its workers then write this way."""
    util.write_error = write_problem
