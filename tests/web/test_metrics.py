"""/metrics: Prometheus metrics, summed over gunicorn's workers."""

import http.client
import json

import pytest
from conftest import READER
from helpers.live_server import run_gunicorn
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture
def database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/nomads.sqlite3"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(name, sorted labels without pid) -> value, summed over processes."""
    found: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "pid"))
            found[sample.name, labels] = found.get((sample.name, labels), 0) + sample.value
    return found


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return samples(response.get_data(as_text=True))


CLUSTER_OK = (
    "nomads_requests_total",
    (("method", "POST"), ("route", "/cluster"), ("status", "200")),
)


def test_invented_methods_and_paths_add_no_series(client):
    """Labels come from closed sets: 40 invented methods and 40 invented paths fold into
    one method ("other") and one route ("unmatched")."""
    client.open("/cluster", method="BREW")  # the folded series exist from here on
    client.get("/invented")
    scrape(client)
    before = scrape(client)
    for n in range(40):
        client.open("/cluster", method=f"X{n}")
        client.get(f"/invented/{n}")
    after = scrape(client)
    assert {key for key in after if key[0] == "nomads_requests_total"} == {
        key for key in before if key[0] == "nomads_requests_total"
    }
    methods = {dict(labels)["method"] for name, labels in after if name == "nomads_requests_total"}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}


def test_requests_assignments_and_latency_are_counted(client, app):
    before = scrape(client)
    for i in range(3):
        client.post("/cluster", json={"_id": i, "interests": {"drinks": True, "parties": True}})
    client.post("/cluster", json={"_id": 9, "interests": {"yoga": True}})
    client.get("/users/nobody", headers=READER)
    after = scrape(client)

    def delta(name: str, labels: tuple) -> float:
        return after.get((name, labels), 0) - before.get((name, labels), 0)

    assert delta(*CLUSTER_OK) == 3
    bad = (("method", "POST"), ("route", "/cluster"), ("status", "422"))
    assert delta("nomads_requests_total", bad) == 1
    user = (("method", "GET"), ("route", "/users/<user_id>"), ("status", "404"))
    assert delta("nomads_requests_total", user) == 1
    assert delta("nomads_request_duration_seconds_count", (("route", "/cluster"),)) == 4
    segment = client.post(
        "/cluster/preview", json={"_id": 0, "interests": {"drinks": True, "parties": True}}
    ).get_json()["cluster"]
    assigned = (("segment", str(segment)), ("source", "api"))
    assert delta("nomads_assignments_total", assigned) == 3
    version = app.extensions["segment_model"].version
    assert after["nomads_model_info", (("version", version),)] == 1


def test_drift_gauges_are_the_drift_report(client):
    for i in range(5):
        client.post("/cluster", json={"_id": i, "interests": {"surf": True}})
    report = client.get("/clusters/drift").get_json()
    found = scrape(client)
    version = (("model_version", report["model_version"]),)
    assert found["nomads_drift_psi", version] == pytest.approx(report["psi"])
    assert found["nomads_drift_window_assignments", version] == report["assignments"] == 5
    for segment in report["segments"]:
        for population in ("recent", "training"):
            labels = (
                ("model_version", report["model_version"]),
                ("population", population),
                ("segment", str(segment["segment"])),
            )
            value = segment[f"{population}_share"]
            assert found["nomads_drift_segment_share", labels] == pytest.approx(value)


def test_every_scrape_counts_every_workers_requests(tmp_path):
    env = {"NOMADS_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3"}
    n_requests = 60
    with run_gunicorn(env, tmp_path / "gunicorn.log", workers=2) as port:
        for i in range(n_requests):  # a connection each: the workers take turns accepting
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            body = json.dumps({"_id": i, "interests": {"surf": True}})
            connection.request("POST", "/cluster", body)
            assert connection.getresponse().status == 200
            connection.close()
        scrapes = []
        for _ in range(6):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/metrics")
            scrapes.append(samples(connection.getresponse().read().decode()))
            connection.close()
    for found in scrapes:
        assert found[CLUSTER_OK] == n_requests
    # Both workers answered, and each says which model it serves.
    text_of_last = scrapes[-1]
    info = [key for key in text_of_last if key[0] == "nomads_model_info"]
    assert len(info) == 1 and text_of_last[info[0]] == 2
