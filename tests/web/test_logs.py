"""Logs: a JSON line per request with its request id, which the answer carries back."""

import datetime
import json
import logging
import re

import pytest

from nomads_cluster.web.logs import configure_logging


@pytest.fixture
def database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/nomads.sqlite3"


@pytest.fixture
def access_lines(app):
    """The access log's lines, formatted as the service writes them."""
    handler = logging.getLogger("nomads_cluster").handlers[0]
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keeper = Keep()
    keeper.addFilter(handler.filters[0])
    logger = logging.getLogger("nomads_cluster.access")
    logger.addHandler(keeper)
    yield lambda: [json.loads(handler.format(r)) for r in records]
    logger.removeHandler(keeper)


def test_a_given_request_id_comes_back_and_is_logged(client, access_lines):
    response = client.post(
        "/cluster",
        json={"_id": "u-1", "interests": {"surf": True}},
        headers={"X-Request-ID": "app-7f3a.42"},
    )
    assert response.headers["X-Request-ID"] == "app-7f3a.42"
    (line,) = access_lines()
    assert line["request_id"] == "app-7f3a.42"
    assert line["method"] == "POST" and line["path"] == "/cluster" and line["status"] == 200
    assert line["user_id"] == "u-1"
    assert line["duration_ms"] > 0 and line["level"] == "INFO" and "time" in line
    assert "surf" not in json.dumps(line)  # no interests, no body


@pytest.mark.parametrize("given", [None, "", "has space", "x" * 129, "<script>", "é"])
def test_a_missing_or_odd_request_id_is_replaced(client, access_lines, given):
    headers = {} if given is None else {"X-Request-ID": given}
    response = client.get("/health", headers=headers)
    request_id = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert access_lines()[-1]["request_id"] == request_id


def test_errors_carry_the_request_id_and_their_log_lines_too(client, access_lines, caplog):
    bad = client.post("/cluster", data=b"{", headers={"X-Request-ID": "bad-1"})
    missing = client.get("/nowhere", headers={"X-Request-ID": "lost-1"})
    assert bad.headers["X-Request-ID"] == "bad-1" and bad.status_code == 400
    assert missing.headers["X-Request-ID"] == "lost-1" and missing.status_code == 404
    assert [(line["request_id"], line["status"]) for line in access_lines()] == [
        ("bad-1", 400),
        ("lost-1", 404),
    ]


def test_each_request_gets_its_own_id(client):
    ids = {client.get("/health").headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5


def test_text_format_is_readable(capsys):
    configure_logging("text", "INFO")
    logging.getLogger("nomads_cluster.access").info("GET /health 200 1.0 ms")
    configure_logging("json", "INFO")
    assert re.search(
        r" INFO nomads_cluster\.access \[-\] GET /health 200 1\.0 ms$",
        capsys.readouterr().err.strip(),
    )


def test_other_logs_are_json_lines_with_their_fields_and_traceback(capsys):
    configure_logging("json", "INFO")
    try:
        raise ValueError("bad model file")
    except ValueError:
        logging.getLogger("nomads_cluster.x").exception(
            "the model could not be read", extra={"path": "/m", "when": datetime.date(2026, 1, 2)}
        )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["level"] == "ERROR" and line["logger"] == "nomads_cluster.x"
    assert line["message"] == "the model could not be read" and line["request_id"] == "-"
    assert line["path"] == "/m" and line["when"] == "2026-01-02"  # not JSON: as text
    assert "ValueError: bad model file" in line["exc_info"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", line["time"])
    assert "msg" not in line and "args" not in line  # the record's own attributes stay out
