"""Bearer keys: who may read a stored user's personal data, who may change the service.

- ``read``: a user's assignment, interests and history. The read key
  (``NOMADS_READ_API_KEY``), for the app's back end, or the admin key.
- ``admin``: erasure. The admin key (``NOMADS_API_KEY``) only.

A route whose keys are none of them configured is turned off (403): personal data is
never served to anyone because a key was forgotten. The app's contract (``/cluster``,
the segments, ``/health``) needs no key.
"""

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Literal, ParamSpec

from flask import Response, current_app, request

from .problems import RequestProblem

Right = Literal["read", "admin"]
# The settings whose keys grant each right.
KEYS_GRANTING: dict[Right, tuple[str, ...]] = {
    "read": ("READ_API_KEY", "API_KEY"),
    "admin": ("API_KEY",),
}
P = ParamSpec("P")
# What a 401 answers with: the client should send a bearer token.
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="nomads-cluster"'}


def key_variables(right: Right) -> str:
    """The settings whose keys grant ``right``, as an operator sets them."""
    return " or ".join(f"NOMADS_{name}" for name in KEYS_GRANTING[right])


def bearer_token() -> str | None:
    """The request's token, from ``Authorization: Bearer <token>``; None without one."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


def require_key(right: Right) -> None:
    """Return when the request's bearer token is a key that grants ``right``; raise a
    403 problem where no key grants it, a 401 otherwise."""
    keys = [key for name in KEYS_GRANTING[right] if (key := current_app.config[name])]
    if not keys:
        raise RequestProblem(
            403,
            "Forbidden",
            f"{request.method} {request.path} is turned off: this server has no "
            f"{key_variables(right)}",
        )
    token = bearer_token()
    # compare_digest against every key: the time tells neither how much of a guessed
    # key was right nor which key it was close to.
    matches = [hmac.compare_digest((token or "").encode(), key.encode()) for key in keys]
    if token is None or not any(matches):
        raise RequestProblem(
            401,
            "Unauthorized",
            f"send a key as a bearer token: Authorization: Bearer <{key_variables(right)}>",
            headers=BEARER_CHALLENGE,
        )


def requires_key(right: Right) -> Callable[[Callable[P, Response]], Callable[P, Response]]:
    """A view decorator: the view answers only requests that carry a key with ``right``."""

    def decorate(view: Callable[P, Response]) -> Callable[P, Response]:
        @wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> Response:
            require_key(right)
            return view(*args, **kwargs)

        return guarded

    return decorate
