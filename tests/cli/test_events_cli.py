"""`nomads-cluster events`: the change feed from a shell, one JSON event per line."""

import json

from nomads_cluster.cli import main
from nomads_cluster.store.records import Assignment


def test_events_prints_the_feed_from_the_oldest_kept_or_after_an_id(
    runner, store, database_url, monkeypatch
):
    monkeypatch.setenv("NOMADS_DATABASE_URL", database_url)
    store.assignments.save(
        [Assignment(f"e{i}", ("surf",), 1 + i, {}, "v1", city="Oslo") for i in range(3)]
    )
    printed = runner.invoke(main, ["events"])
    assert printed.exit_code == 0, printed.output
    events = [json.loads(line) for line in printed.stdout.splitlines()]
    assert [(e["type"], e["user_id"], e["room"]) for e in events] == [
        ("user.placed", f"e{i}", f"oslo-{1 + i}") for i in range(3)
    ]
    rest = runner.invoke(main, ["events", "--after", str(events[0]["id"])])
    assert [json.loads(line)["user_id"] for line in rest.stdout.splitlines()] == ["e1", "e2"]
