"""The OpenAPI 3.1 document, generated from the schema classes the API validates and answers
with (one source of truth), and Swagger UI at /docs, from the swagger-ui-py package's files.
"""

import sys
from http import HTTPStatus
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, json, render_template, url_for
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .. import schemas
from .api import (
    cluster_answer,
)
from .keys import KEYS_GRANTING
from .operations import CLUSTER_EXAMPLE, OPERATIONS, Operation
from .problems import PROBLEM_MIMETYPE
from .served_model import get_model

bp = Blueprint("openapi", __name__)
# A security scheme per key setting (both are bearer tokens).
KEY_SCHEMES = {"API_KEY": "adminKey", "READ_API_KEY": "readKey"}


def swagger_ui_files() -> Path:
    """Swagger UI's files in the swagger-ui-py package, found without importing it (its
    Python side, for other frameworks, would cost start-up time for nothing)."""
    package = find_spec("swagger_ui")
    if package is None or not package.submodule_search_locations:
        raise ImportError("swagger-ui-py is not installed: pip install -r requirements.txt")
    return Path(package.submodule_search_locations[0]) / "static"


# Swagger UI's files, from the package; the page and its set-up script are ours.
docs = Blueprint(
    "docs",
    __name__,
    url_prefix="/docs",
    static_folder=swagger_ui_files(),
    static_url_path="/swagger-ui",
)


# Bodies of the examples; the answers' examples are the loaded model's own answers.
def _component_schemas() -> tuple[dict[type[BaseModel], dict], dict[str, Any]]:
    """Each class's reference, and the components that define them."""
    bodies = {op.body for op in OPERATIONS if op.body}
    answers = {cls for op in OPERATIONS for _, cls in op.responses.values() if cls}
    # A request body's schema is what it accepts; an answer's, what it sends.
    modes = [(cls, "validation") for cls in sorted(bodies, key=lambda c: c.__name__)] + [
        (cls, "serialization") for cls in sorted(answers - bodies, key=lambda c: c.__name__)
    ]
    refs, definitions = models_json_schema(modes, ref_template="#/components/schemas/{model}")
    return {cls: refs[cls, mode] for cls, mode in modes}, definitions.get("$defs", {})


def _problem_example(path: str, status: int, description: str) -> dict[str, Any]:
    """A problem as this response sends it: its own status, title and detail (the
    schema's one example would show every error as a 400)."""
    return {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": description,
        "instance": path,
    }


def _response(op: Operation, status: int, refs: dict, examples: dict) -> dict[str, Any]:
    description, cls = op.responses[status]
    if status == 200 and op.media_type != "application/json":
        schema = {"type": "string"}
        if not op.media_type.startswith("text/"):
            schema["format"] = "binary"
        return {"description": description, "content": {op.media_type: {"schema": schema}}}
    if cls is None:
        return {"description": description}
    media = PROBLEM_MIMETYPE if cls is schemas.Problem else "application/json"
    content: dict[str, Any] = {"schema": refs[cls]}
    if (op.method, op.path, status) in examples:
        content["example"] = examples[op.method, op.path, status]
    elif cls is schemas.Problem:
        content["example"] = _problem_example(op.path, status, description)
    response: dict[str, Any] = {"description": description, "content": {media: content}}
    if status == 503:
        response["headers"] = {
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}
        }
    return response


def build_openapi(examples: dict[tuple[str, str, int], Any], description: str) -> dict[str, Any]:
    """The OpenAPI document; ``examples`` are answers by (method, path, status)."""
    refs, components = _component_schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        operation: dict[str, Any] = {
            "summary": op.summary,
            "operationId": op.operation_id,
            "tags": [op.tag],
            "responses": {
                str(status): _response(op, status, refs, examples) for status in op.responses
            },
        }
        if op.parameters:
            operation["parameters"] = op.parameters
        if op.body is not None:
            content: dict[str, Any] = {"schema": refs[op.body]}
            if op.body_example is not None:
                content["example"] = op.body_example
            operation["requestBody"] = {"required": True, "content": {"application/json": content}}
        if op.key is not None:  # any one of the keys that grant the right
            operation["security"] = [{KEY_SCHEMES[name]: []} for name in KEYS_GRANTING[op.key]]
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nomads-cluster",
            "version": "1",
            "description": description,
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                scheme: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": f"The NOMADS_{name} of the server.",
                }
                for name, scheme in KEY_SCHEMES.items()
            },
        },
    }


def _live_examples() -> dict[tuple[str, str, int], Any]:
    """The loaded model's answers to the documented examples."""
    model = get_model()
    _, answer = cluster_answer(schemas.ClusterRequest.model_validate(CLUSTER_EXAMPLE), "example")
    as_json = answer.model_dump(mode="json")
    return {
        ("post", "/cluster", 200): as_json,
        ("post", "/cluster/preview", 200): as_json,
        ("get", "/clusters/{number}", 200): model.card.segments[0].model_dump(mode="json"),
        ("get", "/version", 200): model.card.model_dump(mode="json"),
    }


@bp.get("/openapi.json")
def openapi_document() -> Response:
    version = get_model().version
    cached = current_app.extensions.get("openapi_document")
    if cached is None or cached[0] != version:  # its examples are the model's answers
        # The service's description: the docstring of the package that made the app.
        description = (sys.modules[current_app.import_name].__doc__ or "").strip()
        cached = version, json.dumps(build_openapi(_live_examples(), description))
        current_app.extensions["openapi_document"] = cached
    return Response(cached[1], mimetype="application/json")


@docs.get("")
def swagger_ui() -> str:
    return render_template("docs.html", openapi_url=url_for("openapi.openapi_document"))
