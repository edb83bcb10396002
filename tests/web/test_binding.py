"""Writes bound to the caller (NOMADS_JWT_SECRET or NOMADS_JWKS_URL): /cluster takes
only the user's own token; off by default."""

import functools
import json
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from conftest import API_KEY, bearer
from cryptography.hazmat.primitives.asymmetric import rsa

SECRET = "a-secret-of-at-least-thirty-two-characters"
BODY = {"_id": "u1", "interests": {"surf": True}}


def token(sub: str, key=SECRET, algorithm="HS256", **claims) -> str:
    payload = {"sub": sub, "exp": int(time.time()) + 600, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm)


@pytest.fixture
def bound(make_app, config_for, database_url):
    return make_app(config_for(database_url, JWT_SECRET=SECRET)).test_client()


def test_the_users_own_token_assigns_it(bound):
    response = bound.post("/cluster", json=BODY, headers=bearer(token("u1")))
    assert response.status_code == 200
    assert response.get_json()["_id"] == "u1"


def test_an_integer_id_is_its_digits_in_the_token(bound):
    body = {"_id": 42, "interests": {"surf": True}}
    assert bound.post("/cluster", json=body, headers=bearer(token("42"))).status_code == 200


def test_another_users_token_is_a_403_and_stores_nothing(bound):
    response = bound.post("/cluster", json=BODY, headers=bearer(token("u2")))
    assert response.status_code == 403
    assert response.mimetype == "application/problem+json"
    assert bound.get("/users/u1", headers=bearer(API_KEY)).status_code == 404


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("not-a-jwt"),
        bearer(token("u1", key="another-secret-of-thirty-two-characters")),
        bearer(token("u1", exp=int(time.time()) - 10)),
        bearer(token("u1", exp=None)),
        bearer(jwt.encode({"sub": "u1", "exp": int(time.time()) + 600}, None, "none")),
        {"Authorization": token("u1")},
    ],
    ids=["none", "garbage", "wrong-secret", "expired", "no-exp", "alg-none", "no-scheme"],
)
def test_no_valid_token_is_a_401(bound, headers):
    response = bound.post("/cluster", json=BODY, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert bound.get("/users/u1", headers=bearer(API_KEY)).status_code == 404


def test_audience_and_issuer_are_checked_when_set(make_app, config_for, database_url):
    config = config_for(database_url, JWT_SECRET=SECRET, JWT_AUDIENCE="app", JWT_ISSUER="idp")
    client = make_app(config).test_client()
    good = token("u1", aud="app", iss="idp")
    assert client.post("/cluster", json=BODY, headers=bearer(good)).status_code == 200
    for bad in (token("u1", aud="other", iss="idp"), token("u1", aud="app", iss="other")):
        assert client.post("/cluster", json=BODY, headers=bearer(bad)).status_code == 401


def test_with_binding_a_batch_takes_the_admin_key_and_preview_stays_open(bound):
    batch = {"users": [BODY]}
    assert bound.post("/cluster/batch", json=batch).status_code == 401
    assert bound.post("/cluster/batch", json=batch, headers=bearer(API_KEY)).status_code == 200
    assert bound.post("/cluster/preview", json=BODY).status_code == 200


def test_without_binding_any_client_assigns_any_id(client):
    assert client.post("/cluster", json=BODY).status_code == 200
    assert client.post("/cluster/batch", json={"users": [BODY]}).status_code == 200


@pytest.fixture
def key_set(tmp_path):
    """An identity provider's RSA key, published as a JWKS over HTTP; yields the key,
    the URL and the server (to take it down)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    (tmp_path / "jwks.json").write_text(
        json.dumps({"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]})
    )
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield private, f"http://127.0.0.1:{server.server_port}/jwks.json", server
    server.shutdown()
    server.server_close()


def test_tokens_signed_with_the_providers_published_key(
    make_app, config_for, database_url, key_set
):
    private, url, _ = key_set
    client = make_app(config_for(database_url, JWKS_URL=url)).test_client()
    signed = jwt.encode(
        {"sub": "u1", "exp": int(time.time()) + 600}, private, "RS256", headers={"kid": "k1"}
    )
    assert client.post("/cluster", json=BODY, headers=bearer(signed)).status_code == 200
    forged = token("u1")  # HS256, or a key the provider did not publish
    assert client.post("/cluster", json=BODY, headers=bearer(forged)).status_code == 401


def test_an_unreadable_key_set_is_a_503(make_app, config_for, database_url, key_set):
    private, url, server = key_set
    client = make_app(config_for(database_url, JWKS_URL=url)).test_client()
    server.shutdown()  # the provider is down
    server.server_close()
    signed = jwt.encode(
        {"sub": "u1", "exp": int(time.time()) + 600}, private, "RS256", headers={"kid": "k1"}
    )
    response = client.post("/cluster", json=BODY, headers=bearer(signed))
    assert response.status_code == 503
    assert "Retry-After" in response.headers
