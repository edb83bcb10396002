from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR
from nomads_cluster.web.cors import parse_origins

APP_EXAMPLE = {"_id": "6172a562284bf0c3a4c8632a", "interests": {"surf": True}}
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "Content-Type",
}


def app_with_origins(monkeypatch, make_app, origins: str, database_url: str):
    monkeypatch.setenv("NOMADS_CORS_ORIGINS", origins)
    monkeypatch.setenv("NOMADS_DATABASE_URL", database_url)
    monkeypatch.setenv("NOMADS_MODEL_DIR", str(DEFAULT_MODEL_DIR))
    return make_app(None).test_client()


def test_parse_origins():
    assert parse_origins(" https://a.example ,https://b.example,, ") == {
        "https://a.example",
        "https://b.example",
    }


def test_cors_allows_any_origin_by_default(client):
    response = client.post("/cluster", json=APP_EXAMPLE, headers={"Origin": "https://app.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_cors_preflight_is_answered(client):
    response = client.options(
        "/cluster",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Content-Type",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_cors_origins_are_configurable(monkeypatch, make_app, database_url):
    client = app_with_origins(
        monkeypatch, make_app, "https://app.example, https://admin.example", database_url
    )
    allowed = client.post("/cluster", json=APP_EXAMPLE, headers={"Origin": "https://admin.example"})
    refused = client.post("/cluster", json=APP_EXAMPLE, headers={"Origin": "https://evil.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://admin.example"
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_cors_headers_on_errors_too(client):
    response = client.post("/cluster", data=b"{", headers={"Origin": "https://app.example"})
    assert response.status_code == 400
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_configured_origins_vary_on_origin(monkeypatch, make_app, database_url):
    client = app_with_origins(monkeypatch, make_app, "https://app.example", database_url)
    response = client.post("/cluster", json=APP_EXAMPLE, headers={"Origin": "https://app.example"})
    assert "Origin" in response.headers["Vary"]


def test_preflight_from_unknown_origin_gets_no_grant(monkeypatch, make_app, database_url):
    client = app_with_origins(monkeypatch, make_app, "https://app.example", database_url)
    response = client.options("/cluster", headers={"Origin": "https://evil.example", **PREFLIGHT})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Methods" not in response.headers


def test_no_origin_header_still_gets_wildcard(client):
    assert client.get("/health").headers["Access-Control-Allow-Origin"] == "*"


def test_preflight_grants_the_asked_headers_methods_and_a_day(client):
    response = client.options(
        "/users/u-1",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "get",
            "Access-Control-Request-Headers": "X-Request-ID, authorization",
        },
    )
    assert response.headers["Access-Control-Allow-Headers"] == "X-Request-ID, authorization"
    assert response.headers["Access-Control-Max-Age"] == "86400"
    methods = response.headers["Access-Control-Allow-Methods"].split(", ")
    assert {"GET", "POST", "DELETE", "OPTIONS"} <= set(methods)


def test_an_options_request_that_is_not_a_preflight_gets_only_the_origin(client):
    plain = client.options("/cluster", headers={"Origin": "https://app.example"})
    unknown = client.options(
        "/cluster",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "PURGE"},
    )
    for response in (plain, unknown):
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Methods" not in response.headers
        assert "Access-Control-Max-Age" not in response.headers


def test_configured_origins_match_without_regard_to_case(monkeypatch, make_app, database_url):
    client = app_with_origins(monkeypatch, make_app, "https://app.example", database_url)
    response = client.post("/cluster", json=APP_EXAMPLE, headers={"Origin": "https://APP.Example"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://APP.Example"
    without_origin = client.get("/health")
    assert "Access-Control-Allow-Origin" not in without_origin.headers
    assert "Origin" in without_origin.headers["Vary"]


def test_private_network_access_is_not_granted(client):
    response = client.get(
        "/health",
        headers={"Origin": "https://app.example", "Access-Control-Request-Private-Network": "true"},
    )
    assert response.headers["Access-Control-Allow-Private-Network"] == "false"
