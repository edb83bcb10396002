"""Several gunicorn workers writing at once: every acknowledged assignment is stored."""

import http.client
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from live_server import run_gunicorn

from nomads_cluster.store import assignment_history, assignments, create_store_engine

CLIENTS, REQUESTS_PER_CLIENT = 8, 100


@pytest.fixture
def gunicorn(database_url, tmp_path):
    """The Procfile's server (2 workers, --preload) on a free port and the test database."""
    with run_gunicorn({"NOMADS_DATABASE_URL": database_url}, tmp_path / "gunicorn.log") as port:
        yield port


def post_many(port: int, client: int) -> list[tuple[str, int, dict]]:
    """One keep-alive client posting its users; (id, status, answer) of each."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    answers = []
    for n in range(REQUESTS_PER_CLIENT):
        user_id = f"c{client}-{n % 20}"  # repeated ids: updates race with each other too
        interests = {"surf": n % 2 == 0, "museums": n % 3 == 0, "coffee": client % 2 == 0}
        body = json.dumps({"_id": user_id, "interests": interests})
        connection.request("POST", "/cluster", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        answers.append((user_id, response.status, json.loads(response.read())))
    connection.close()  # gthread keeps connections alive
    return answers


def test_concurrent_writes_from_several_workers_are_all_stored(gunicorn, database_url):
    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = [
            a for batch in pool.map(post_many, [gunicorn] * CLIENTS, range(CLIENTS)) for a in batch
        ]
    statuses = [status for _, status, _ in answers]
    assert statuses == [200] * len(answers), [a for a in answers if a[1] != 200][:3]

    engine = create_store_engine(database_url, timeout=5)
    with engine.connect() as conn:
        history = conn.execute(sa.select(sa.func.count()).select_from(assignment_history))
        assert history.scalar_one() == len(answers)
        current = dict(conn.execute(sa.select(assignments.c.user_id, assignments.c.cluster)).all())
    engine.dispose()
    # Each client posts its own users in order: the last answer of each user is current.
    last = {user_id: answer["cluster"] for user_id, _, answer in answers}
    assert current == last
