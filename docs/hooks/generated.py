"""MkDocs hook: what the site shows of the code, made from it at each build so that it
cannot drift: the API reference from the app's own /openapi.json, and the committed
model's heatmap (no copy kept by hand)."""

import json
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parents[2]
REFERENCE_PAGE = "reference.md"
HEATMAP = "img/heatmap.png"


def openapi_document() -> dict[str, Any]:
    """The document the service serves, from an app on a store of its own."""
    from nomads_cluster import create_app

    with tempfile.TemporaryDirectory() as store:
        app = create_app(
            {
                "DATABASE_URL": f"sqlite:///{store}/docs.sqlite3",
                "LOG_FORMAT": "text",
                "LOG_LEVEL": "WARNING",
            }
        )
        response = app.test_client().get("/openapi.json")
        app.extensions["model_follower"].stop()
        app.extensions["user_store"].engine.dispose()
    if response.status_code != 200:
        raise RuntimeError(f"/openapi.json answered {response.status_code}")
    return response.get_json()


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _schema_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[`{name}`](#{name.lower()})"
    if "anyOf" in schema:
        return " or ".join(_schema_name(option) for option in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {_schema_name(schema.get('items', {}))}"
    if "type" in schema:
        return f"`{schema['type']}`"
    return "any"


def _operation(method: str, path: str, operation: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", "", operation.get("summary", ""), ""]
    if operation.get("security"):
        lines += ["Requires `Authorization: Bearer $NOMADS_API_KEY`.", ""]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
        lines += [
            f"| `{p['name']}` | {p['in']} | {_schema_name(p.get('schema', {}))} | "
            f"{'yes' if p.get('required') else 'no'} | {_cell(p.get('description', ''))} |"
            for p in parameters
        ]
        lines.append("")
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body:
        lines += [f"Body: {_schema_name(body['schema'])}", ""]
        if "example" in body:
            lines += ["```json", json.dumps(body["example"]), "```", ""]
    lines += ["| status | answer | body |", "|---|---|---|"]
    for status, answer in operation["responses"].items():
        content = answer.get("content", {})
        schema = next((c["schema"] for c in content.values() if "schema" in c), None)
        kinds = ", ".join(f"`{kind}`" for kind in content)
        shown = f"{_schema_name(schema)} ({kinds})" if schema else kinds
        lines.append(f"| {status} | {_cell(answer['description'])} | {shown} |")
    return [*lines, ""]


def _component(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [_cell(schema["description"]), ""]
    properties = schema.get("properties", {})
    if properties:
        required = set(schema.get("required", []))
        lines += ["| field | type | required | description |", "|---|---|---|---|"]
        lines += [
            f"| `{field}` | {_schema_name(spec)} | {'yes' if field in required else 'no'} | "
            f"{_cell(spec.get('description', ''))} |"
            for field, spec in properties.items()
        ]
        lines.append("")
    return lines


def reference_markdown(document: dict[str, Any]) -> str:
    lines = [
        "# API reference",
        "",
        "Generated at each build from the service's own `GET /openapi.json` (OpenAPI "
        f"{document['openapi']}); the [guide](api.md) shows each endpoint with curl.",
        "",
        "## Operations",
        "",
    ]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            lines += _operation(method, path, operation)
    lines += ["## Schemas", ""]
    for name, schema in document["components"]["schemas"].items():
        lines += _component(name, schema)
    return "\n".join(lines)


def on_files(files: Files, config: Any) -> Files:
    content = reference_markdown(openapi_document())
    files.append(File.generated(config, REFERENCE_PAGE, content=content))
    files.append(File.generated(config, HEATMAP, abs_src_path=str(REPO / "model" / "heatmap.png")))
    return files
