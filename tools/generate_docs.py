"""The pages of the manual made from the code, written into docs/ so that they read
on the forge as on the site: the API reference from the app's own /openapi.json, the
settings table from the settings class, and the committed model's heatmap.

    python tools/generate_docs.py          # write them (make docs-generate)
    python tools/generate_docs.py --check  # exit 1 when a committed one is stale

tests/test_docs.py runs the check, so a page cannot drift from the code.
"""

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
REFERENCE_PAGE = DOCS / "reference.md"
HEATMAP = DOCS / "img" / "heatmap.png"
CONFIGURATION_PAGE = DOCS / "configuration.md"
TABLE_START = "<!-- settings table: made by tools/generate_docs.py -->\n"
TABLE_END = "<!-- end of the settings table -->\n"


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
        "Made from the service's own `GET /openapi.json` (OpenAPI "
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


def configuration_page(page: str) -> str:
    """``page`` with its settings table made again from the settings class."""
    from nomads_cluster.settings import settings_table

    before, _, rest = page.partition(TABLE_START)
    _, _, after = rest.partition(TABLE_END)
    return before + TABLE_START + settings_table() + TABLE_END + after


def generated() -> dict[Path, bytes]:
    """Each generated file and what it must hold."""
    return {
        REFERENCE_PAGE: (reference_markdown(openapi_document()) + "\n").encode(),
        CONFIGURATION_PAGE: configuration_page(CONFIGURATION_PAGE.read_text()).encode(),
        HEATMAP: (REPO / "model" / "heatmap.png").read_bytes(),
    }


def stale() -> list[Path]:
    """The generated files whose committed content is not what the code makes."""
    return [
        path
        for path, content in generated().items()
        if not path.exists() or path.read_bytes() != content
    ]


def main(arguments: list[str]) -> int:
    if arguments == ["--check"]:
        paths = stale()
        for path in paths:
            print(f"{path.relative_to(REPO)} is stale: run make docs-generate", file=sys.stderr)
        return 1 if paths else 0
    for path, content in generated().items():
        path.write_bytes(content)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
