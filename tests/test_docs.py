"""The manual's examples, run as written: every curl of the README and docs/ against the
app, page by page in order, each answer with the fields its page shows; and every
NOMADS_* setting a command line of the manual sets passes the service's validation."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers.live_server import REPO

from nomads_cluster import create_app
from nomads_cluster.settings import ConfigError, load_settings

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
# The keys the API guide starts its server with, by the variables its curls name.
KEYS = {
    "NOMADS_API_KEY": "change-me-to-a-long-secret",
    "NOMADS_READ_API_KEY": "change-me-to-a-read-secret",
}
SETTING = re.compile(r"NOMADS_[A-Z_]+=.+")


def shell_commands(block: str) -> list[str]:
    """The block's commands: lines joined while a quote is open or a line ends with \\."""
    commands, pending = [], ""
    for line in block.splitlines():
        pending += line + "\n"
        if pending.rstrip().endswith("\\"):
            continue
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # a quote still open: the command goes on
            continue
        if pending.strip():
            commands.append(pending.strip())
        pending = ""
    return commands


def curl_examples(page: Path) -> list[tuple[str, Any]]:
    """Each curl of the page in order, with the JSON answer documented right after it
    (a json block that directly follows a block of that one curl), or None."""
    text = page.read_text()
    blocks = list(FENCE.finditer(text))
    examples = []
    for index, block in enumerate(blocks):
        if block.group(1) != "sh":
            continue
        curls = [c for c in shell_commands(block.group(2)) if c.startswith("curl ")]
        after = blocks[index + 1] if index + 1 < len(blocks) else None
        answers = (
            after is not None
            and after.group(1) == "json"
            and not text[block.end() : after.start()].strip()  # nothing between the two
        )
        documented = json.loads(after.group(2)) if answers else None
        if documented is not None and len(curls) != 1:
            raise AssertionError(f"{page.name}: a json answer follows {len(curls)} curls")
        examples += [(curl, documented) for curl in curls]
    return examples


def request_of(command: str) -> dict[str, Any]:
    """The request a curl command line sends (the options the manual uses)."""
    tokens = shlex.split(command, comments=True)[1:]
    request: dict[str, Any] = {"method": None, "headers": {}, "data": None}
    options_with_values = {"-X", "-H", "-d", "-o", "-w"}
    while tokens:
        token = tokens.pop(0)
        if token in options_with_values:
            value = tokens.pop(0)
            if token == "-X":
                request["method"] = value
            elif token == "-H":
                name, _, header = value.partition(":")
                request["headers"][name] = re.sub(
                    r"\$(NOMADS_\w+)", lambda m: KEYS[m.group(1)], header.strip()
                )
            elif token == "-d":
                request["data"] = value
        elif token.startswith("localhost:8000"):
            parts = urlsplit("http://" + token)
            request["path"], request["query_string"] = parts.path, parts.query
        elif token != "-s":
            raise AssertionError(f"unexpected curl option {token!r} in: {command}")
    request["method"] = request["method"] or ("POST" if request["data"] else "GET")
    return request


def expected_status(command: str, documented: Any) -> int:
    stated = re.search(r"#\s*(\d{3})\s*$", command)
    if stated:
        return int(stated.group(1))
    if isinstance(documented, dict) and "title" in documented:  # a documented problem
        return documented["status"]
    return 200


def shape_differences(documented: Any, actual: Any, where: str = "#") -> list[str]:
    """Where the answer lacks a field the page shows, or has one the page does not."""
    if isinstance(documented, dict):
        if not isinstance(actual, dict):
            return [f"{where}: an object on the page, {type(actual).__name__} in the answer"]
        differences = [f"{where}/{key}: not in the answer" for key in documented.keys() - actual]
        differences += [f"{where}/{key}: not on the page" for key in actual.keys() - documented]
        for key in documented.keys() & actual.keys():
            differences += shape_differences(documented[key], actual[key], f"{where}/{key}")
        return differences
    if isinstance(documented, list) and isinstance(actual, list):
        if len(actual) < len(documented):
            return [f"{where}: {len(documented)} items on the page, {len(actual)} answered"]
        return [
            difference
            for index, item in enumerate(documented)
            for difference in shape_differences(item, actual[index], f"{where}/{index}")
        ]
    return []


@pytest.mark.parametrize("page", [p for p in PAGES if curl_examples(p)], ids=lambda p: p.name)
def test_every_curl_of_the_page_answers_as_shown(page, tmp_path):
    keys = {name.removeprefix("NOMADS_"): key for name, key in KEYS.items()}
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'docs.sqlite3'}", **keys})
    client = app.test_client()
    for command, documented in curl_examples(page):
        request = request_of(command)
        response = client.open(
            request["path"],
            method=request["method"],
            headers=request["headers"],
            data=request["data"],
            query_string=request["query_string"],
        )
        assert response.status_code == expected_status(command, documented), command
        if documented is not None:
            assert shape_differences(documented, response.get_json()) == [], command
    app.extensions["model_follower"].stop()


def manual_settings() -> list[tuple[str, str]]:
    """The NOMADS_* variables the manual's command lines set (comments aside)."""
    return [
        tuple(token.split("=", 1))
        for page in PAGES
        for language, body in FENCE.findall(page.read_text())
        if language == "sh"
        for command in shell_commands(body)
        for token in shlex.split(command, comments=True)
        if SETTING.fullmatch(token)
    ]


@pytest.fixture
def environment_of(monkeypatch):
    """Sets one variable in an environment without any other NOMADS_* setting."""
    for name in list(os.environ):
        if name.startswith("NOMADS_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    return monkeypatch.setenv


@pytest.mark.parametrize("name, value", manual_settings())
def test_settings_in_the_manual_are_accepted(environment_of, name, value):
    environment_of(name, value)
    load_settings()


def test_a_setting_the_service_refuses_is_caught(environment_of):
    # What the settings test above relies on: the validation refuses a short key.
    environment_of("NOMADS_API_KEY", "secret")
    with pytest.raises(ConfigError, match="NOMADS_API_KEY"):
        load_settings()


def test_the_curl_reader_finds_the_guide_examples():
    examples = curl_examples(REPO / "docs" / "api.md")
    requests = [request_of(command) for command, _ in examples]
    assert {"POST", "GET", "DELETE"} <= {r["method"] for r in requests}
    assert sum(documented is not None for _, documented in examples) >= 8


def test_the_pages_made_from_the_code_are_current():
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "generate_docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def heading_anchors(page: Path) -> set[str]:
    """The anchors of a page's headings, as the site's table of contents makes them."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    slugs = (re.sub(r"[^\w\s-]", "", h.replace("`", "")).strip().lower() for h in headings)
    return {re.sub(r"[-\s]+", "-", slug) for slug in slugs}


def test_every_link_to_a_section_finds_it():
    broken = []
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([\w/.-]*\.md)#([\w-]+)\)", page.read_text()):
            linked = (page.parent / target).resolve()
            if not linked.exists() or anchor not in heading_anchors(linked):
                broken.append(f"{page.name}: {target}#{anchor}")
    assert broken == []
