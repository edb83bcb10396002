"""Where a document breaks its pydantic schema, as JSON pointers: for problem details,
files' bad rows and model cards alike."""

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

ErrorDetail = dict[str, str]


def json_pointer(loc: tuple[int | str, ...]) -> str:
    """A JSON pointer, as a URI fragment: "#" is the whole document."""
    return "#" + "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in loc)


def describe_error(error: dict[str, Any]) -> str:
    """What is wrong, in words a client reads without knowing pydantic."""
    kind = error["type"]
    if kind == "missing":
        return "is required"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return "must be a JSON object"
    return error["msg"]


def error_details(
    error: ValidationError,
    prefix: tuple[int | str, ...] = (),
    describe: Callable[[dict[str, Any]], str] = describe_error,
) -> list[ErrorDetail]:
    """Each schema error: where (a JSON pointer below ``prefix``) and what."""
    return [
        {"pointer": json_pointer(prefix + tuple(e["loc"])), "detail": describe(e)}
        for e in error.errors(include_url=False, include_input=False)
    ]


# Errors listed per document: a body of thousands of errors gets a short answer (an
# answer stays within a small multiple of its request).
MAX_LISTED = 10


def join_listed(problems: list[str], limit: int = MAX_LISTED) -> str:
    """The first ``limit`` problems in one line, and how many more there are."""
    summary = "; ".join(problems[:limit])
    if len(problems) > limit:
        summary += f"; and {len(problems) - limit} more"
    return summary


def summarize(errors: list[ErrorDetail], limit: int = MAX_LISTED) -> str:
    """The first ``limit`` errors in one line, each with its place, and how many more."""
    return join_listed([f"{e['pointer']} {e['detail']}" for e in errors], limit)
