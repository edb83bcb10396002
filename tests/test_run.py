"""`make run`: the Procfile's web and worker processes together (honcho), on the
embedded SQLite default; a newcomer who points the worker at a receiver sees the
events of their sign-ups arrive."""

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from helpers.live_server import REPO
from helpers.receiver import SECRET
from helpers.waiting import wait_until

from nomads_cluster.testing import WebhookReceiver, free_port, wait_until_healthy


def make_run_command() -> str:
    """The honcho command of the Makefile's run target."""
    recipe = re.search(r"^run: .*\n\t(.+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    return recipe.split("$(BIN)/", 1)[1]


def test_make_run_serves_and_delivers_the_events_of_a_sign_up(tmp_path):
    assert make_run_command() == "honcho start --port $(PORT) web worker"
    receiver = WebhookReceiver(SECRET)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NOMADS_")},
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "NOMADS_DATABASE_URL": f"sqlite:///{tmp_path / 'run.sqlite3'}",
        "NOMADS_WEBHOOK_URL": receiver.url,
        "NOMADS_WEBHOOK_SECRET": SECRET,
    }
    honcho = [str(Path(sys.executable).parent / "honcho"), "start", "--port", str(port)]
    with (tmp_path / "run.log").open("w") as log:
        run = subprocess.Popen(
            [*honcho, "web", "worker"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        try:
            wait_until_healthy(port, server=run)
            body = {"_id": "newcomer", "interests": {"surf": True}, "city": "Madrid"}
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/cluster", json.dumps(body).encode(), method="POST"
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.loads(response.read())
            assert wait_until(lambda: receiver.deliveries, 30), (tmp_path / "run.log").read_text()
        finally:
            os.killpg(run.pid, signal.SIGTERM)
            run.wait(timeout=30)
            receiver.close()
    ((_, events, _),) = receiver.deliveries
    assert [(e["type"], e["user_id"], e["room"]) for e in events] == [
        ("user.placed", "newcomer", answer["room"]["id"])
    ]
