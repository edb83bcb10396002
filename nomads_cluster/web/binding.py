"""Binding writes to the caller, for operators who turn it on.

The app's contract lets any client POST any ``_id``: anyone may overwrite anyone's
assignment. With ``NOMADS_JWT_SECRET`` (HS256) or ``NOMADS_JWKS_URL`` (RS256 or ES256,
the identity provider's published keys) set, ``POST /cluster`` takes only a bearer JWT
whose ``sub`` is the body's ``_id`` (its digits, for an integer), signed and unexpired
(and of ``NOMADS_JWT_AUDIENCE`` and ``NOMADS_JWT_ISSUER`` when set): 401 without a
valid token, 403 for another user's. ``POST /cluster/batch``, which writes many users,
then takes the admin key. Off by default.
"""

from typing import Any

from flask import Flask, current_app

from .keys import BEARER_CHALLENGE, bearer_token, require_key
from .problems import RequestProblem, retry_later

SECRET_ALGORITHMS = ["HS256"]
KEY_SET_ALGORITHMS = ["RS256", "ES256"]
REQUIRED_CLAIMS = ["sub", "exp"]


def binding_on() -> bool:
    return "jwt_keys" in current_app.extensions


def _verified_claims(token: str) -> dict[str, Any]:
    """The token's claims, or jwt.PyJWTError."""
    import jwt

    config = current_app.config
    options = {"require": REQUIRED_CLAIMS}
    checks = {"audience": config["JWT_AUDIENCE"], "issuer": config["JWT_ISSUER"]}
    keys = current_app.extensions["jwt_keys"]
    if isinstance(keys, jwt.PyJWKClient):
        key = keys.get_signing_key_from_jwt(token).key
        return jwt.decode(token, key, KEY_SET_ALGORITHMS, options=options, **checks)
    return jwt.decode(token, keys, SECRET_ALGORITHMS, options=options, **checks)


def require_own_token(user_id: str | int) -> None:
    """Return when binding is off or the request's token is the user's own; raise a
    401 or 403 problem otherwise."""
    if not binding_on():
        return
    # Imported only where binding is on: PyJWT and cryptography would cost a server
    # that does not bind memory and start-up time for nothing.
    import jwt

    token = bearer_token()
    if token is None:
        raise RequestProblem(
            401,
            "Unauthorized",
            "send the user's token: Authorization: Bearer <JWT>",
            headers=BEARER_CHALLENGE,
        )
    try:
        claims = _verified_claims(token)
    except jwt.PyJWKClientConnectionError:
        # The key set could not be fetched: the provider's fault, not the client's.
        raise retry_later(
            "Service Unavailable", "the identity provider's keys cannot be read now"
        ) from None
    except jwt.PyJWTError as exc:  # PyJWKClientError too: no published key signed it
        raise RequestProblem(
            401, "Unauthorized", f"the token is not valid: {exc}", headers=BEARER_CHALLENGE
        ) from None
    if str(claims["sub"]) != str(user_id):
        raise RequestProblem(
            403, "Forbidden", "the token's subject is another user: a user assigns only itself"
        )


def require_batch_right() -> None:
    """With binding on, writing many users at once takes the admin key."""
    if binding_on():
        require_key("admin")


def init_app(app: Flask) -> None:
    if app.config["JWKS_URL"]:
        import jwt

        app.extensions["jwt_keys"] = jwt.PyJWKClient(app.config["JWKS_URL"], cache_keys=True)
    elif app.config["JWT_SECRET"]:
        app.extensions["jwt_keys"] = app.config["JWT_SECRET"]
