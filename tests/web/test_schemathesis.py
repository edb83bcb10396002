"""schemathesis against /openapi.json: every operation, with generated requests, valid
and not; no 5xx, and every answer fits the document (status, content type, body,
headers). schemathesis' default checks, positive and negative data included."""

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from nomads_cluster import create_app

MAX_EXAMPLES = 60  # per operation: 14 operations, some 800 requests in all

# An app of its own, made at import: schemathesis.pytest.from_fixture does not run
# under pytest 9 (schemathesis 4.32.5 reads a pytest internal that is gone).
_STORE = Path(tempfile.mkdtemp(prefix="nomads-schemathesis-")) / "nomads.sqlite3"
app = create_app(
    {"TESTING": True, "DATABASE_URL": f"sqlite:///{_STORE}", "API_KEY": "test-key-0123456789"}
)
schema = schemathesis.openapi.from_wsgi("/openapi.json", app)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_keeps_its_contract(case):
    case.call_and_validate()
