"""Security headers: nosniff everywhere; on HTML pages, a policy of the app's own files."""

import pytest

from nomads_cluster.web.security import CONTENT_SECURITY_POLICY


@pytest.fixture
def database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/nomads.sqlite3"


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_html_pages_get_a_content_security_policy(client, path):
    response = client.get(path)
    assert response.mimetype == "text/html"
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", ["/health", "/clusters", "/nowhere", "/metrics"])
def test_other_answers_are_not_sniffed(client, path):
    response = client.get(path)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" not in response.headers


def test_debug_is_off(app):
    assert app.debug is False
