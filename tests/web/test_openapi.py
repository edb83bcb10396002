"""The OpenAPI document: valid, complete, generated from the schemas, true to the answers."""

import re

import pytest
from conftest import API_KEY, READER
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from nomads_cluster import schemas
from nomads_cluster.segmentation.card import ModelCard
from nomads_cluster.segmentation.interests import INTEREST_KEYS
from nomads_cluster.web.operations import BATCH_EXAMPLE, CLUSTER_EXAMPLE, OPERATIONS

UNDOCUMENTED = {
    "/",
    "/favicon.ico",
    "/openapi.json",
    "/docs",
    "/static/<path:filename>",
    "/docs/swagger-ui/<path:filename>",
}


@pytest.fixture
def database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/nomads.sqlite3"


@pytest.fixture
def document(client) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def check_answer(document: dict, method: str, path: str, response) -> None:
    """The response's status is documented for the operation, and its body fits."""
    documented = document["paths"][path][method]["responses"]
    assert str(response.status_code) in documented, (method, path, response.status_code)
    content = documented[str(response.status_code)].get("content")
    if content is None:
        assert response.data == b""
        return
    ((media_type, spec),) = content.items()
    assert response.mimetype == media_type
    if media_type.endswith("json"):
        schema = {**spec["schema"], "components": document["components"]}
        Draft202012Validator(schema).validate(response.get_json())


def test_document_is_valid_openapi_3_1(document):
    validate(document)
    assert document["openapi"].startswith("3.1")


def test_every_route_is_documented_and_nothing_else(app, document):
    routes = {
        (method.lower(), re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.rule not in UNDOCUMENTED
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert documented == routes


def test_schemas_are_the_classes_that_validate_and_answer(document):
    components = document["components"]["schemas"]
    for cls, mode in [
        (schemas.ClusterRequest, "validation"),
        (schemas.ClusterResponse, "serialization"),
        (ModelCard, "serialization"),
    ]:
        generated = cls.model_json_schema(mode=mode, ref_template="#/components/schemas/{model}")
        generated.pop("$defs", None)
        assert components[cls.__name__] == generated
    assert set(components["Interests"]["properties"]) == set(INTEREST_KEYS)
    assert components["Interests"]["additionalProperties"] is False


@pytest.mark.parametrize("user_id", ["u-1", "\x00", "a\x00b", "é" * 256, "x" * 257, ""])
def test_the_documented_user_id_is_the_one_accepted(document, user_id):
    """A generated client (or schemathesis) that follows the document sends only ids
    the service takes, and the document refuses the ones it refuses."""
    id_schema = document["components"]["schemas"]["ClusterRequest"]["properties"]["_id"]
    documented = Draft202012Validator(id_schema).is_valid(user_id)
    assert documented == schemas.storable_id(user_id)


def test_examples_fit_their_schemas_and_are_the_live_answers(client, document):
    operation = document["paths"]["/cluster"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["example"] == CLUSTER_EXAMPLE
    example = operation["responses"]["200"]["content"]["application/json"]["example"]
    answer = client.post("/cluster/preview", json=CLUSTER_EXAMPLE).get_json()
    assert answer == example
    media_with_examples = [
        media
        for item in document["paths"].values()
        for spec in item.values()
        for response in spec["responses"].values()
        for media in response.get("content", {}).values()
        if "example" in media
    ]
    assert len(media_with_examples) >= 4
    for media in media_with_examples:
        schema = {**media["schema"], "components": document["components"]}
        Draft202012Validator(schema).validate(media["example"])


def test_real_answers_fit_the_document(client, document):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    reader = {"headers": READER}
    calls = [
        ("post", "/cluster", "/cluster", {"json": CLUSTER_EXAMPLE}),
        ("post", "/cluster", "/cluster", {"json": {"_id": 1, "interests": {}}}),
        ("post", "/cluster", "/cluster", {"data": b"{not json"}),
        ("post", "/cluster", "/cluster", {"json": {"_id": [], "interests": {"x": 2}}}),
        ("post", "/cluster", "/cluster", {"data": b" " * 20_000}),
        ("post", "/cluster/preview", "/cluster/preview", {"json": CLUSTER_EXAMPLE}),
        ("post", "/cluster/batch", "/cluster/batch", {"json": BATCH_EXAMPLE}),
        ("post", "/cluster/batch", "/cluster/batch", {"json": {"users": []}}),
        ("get", "/clusters", "/clusters", {}),
        ("get", "/clusters/{number}", "/clusters/2", {}),
        ("get", "/clusters/{number}", "/clusters/7", {}),
        ("get", "/version", "/version", {}),
        ("get", "/health", "/health", {}),
        ("get", "/metrics", "/metrics", {}),
        ("get", "/users/{user_id}", f"/users/{CLUSTER_EXAMPLE['_id']}", reader),
        ("get", "/users/{user_id}", "/users/nobody", reader),
        ("get", "/users/{user_id}", "/users/nobody", {}),
        ("get", "/users/{user_id}/history", "/users/1/history", reader),
        ("get", "/users/{user_id}/history", "/users/1/history?limit=0", reader),
        ("delete", "/users/{user_id}", "/users/1", {}),
        ("delete", "/users/{user_id}", "/users/1", {"headers": headers}),
        ("delete", "/users/{user_id}", "/users/1", {"headers": headers}),
    ]
    seen = set()
    for method, path, url, options in calls:
        response = getattr(client, method)(url, **options)
        check_answer(document, method, path, response)
        seen.add((path, response.status_code))
    with client.get("/clusters/heatmap.png") as heatmap:
        check_answer(document, "get", "/clusters/heatmap.png", heatmap)
    # The calls reach every answer but the store's 503s (test_store_outage.py).
    assert {(p, 422) for p in ("/cluster", "/cluster/batch")} <= seen
    assert {
        ("/cluster", 400),
        ("/cluster", 413),
        ("/users/{user_id}", 204),
        ("/users/{user_id}", 401),
        ("/users/{user_id}", 404),
    } <= seen


def test_operations_behind_a_key_say_which(client, document):
    keys = {(op.method, op.path): op.key for op in OPERATIONS if op.key}
    assert keys == {
        ("get", "/users/{user_id}"): "read",
        ("get", "/users/{user_id}/history"): "read",
        ("get", "/users/{user_id}/similar"): "read",
        ("get", "/rooms/{room_id}/members"): "read",
        ("get", "/events"): "read",
        ("delete", "/users/{user_id}"): "admin",
    }
    accepted = {"read": [{"readKey": []}, {"adminKey": []}], "admin": [{"adminKey": []}]}
    for (method, path), right in keys.items():
        assert document["paths"][path][method]["security"] == accepted[right]
    schemes = document["components"]["securitySchemes"]
    assert {name: scheme["scheme"] for name, scheme in schemes.items()} == {
        "adminKey": "bearer",
        "readKey": "bearer",
    }


def test_swagger_ui_is_served_by_the_app_itself(client):
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-openapi-url="/openapi.json"' in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) == 4 and all(url.startswith("/") for url in assets)  # no CDN
    for url in assets:
        with client.get(url) as asset:
            assert asset.status_code == 200, url
    with client.get("/docs/swagger-ui/swagger-ui-bundle.js") as bundle:
        assert b"SwaggerUIBundle" in bundle.data


def test_each_problem_example_has_its_own_status(client):
    document = client.get("/openapi.json").get_json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                problem = answer.get("content", {}).get("application/problem+json")
                if problem is not None:
                    assert problem["example"]["status"] == int(status), (method, path, status)
