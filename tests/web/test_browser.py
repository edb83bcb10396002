"""The web page and Swagger UI in a real headless Chromium (Debian's), driven by Playwright."""

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from nomads_cluster.segmentation.interests import INTEREST_KEYS, encode_interests, key_to_label

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 375, "height": 667}
AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"

if not os.path.exists(CHROMIUM):
    # `make test` installs it; only a bare `pytest` elsewhere can lack it.
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    pytest.skip(f"{CHROMIUM} is missing: `make test` installs it", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/nomads.sqlite3"


@pytest.fixture
def base_url(app):
    """The app on a real socket, served from a thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def watch(page, base_url: str) -> tuple[list[str], list[str]]:
    """Requests leaving the app, and what the console complains of: the content
    security policy's refusals, and failed loads (a missing icon, say)."""
    outside: list[str] = []
    refused: list[str] = []
    page.on("request", lambda r: r.url.startswith(base_url) or outside.append(r.url))
    page.on("console", lambda m: m.type == "error" and refused.append(m.text))
    page.on("response", lambda r: r.status >= 400 and refused.append(f"{r.status} {r.url}"))
    return outside, refused


@contextmanager
def phone(browser, base_url: str, bypass_csp: bool = False) -> Iterator:
    """A page on a phone-sized touch screen. Every request must stay on the app (no
    CDN, no font service), and the policy must refuse nothing the page does."""
    context = browser.new_context(
        viewport=PHONE, has_touch=True, is_mobile=True, bypass_csp=bypass_csp
    )
    page = context.new_page()
    outside, refused = watch(page, base_url)
    yield page
    assert outside == [] and refused == []
    context.close()


@pytest.fixture
def phone_page(browser, base_url):
    with phone(browser, base_url) as page:
        yield page


def test_ticking_interests_shows_the_segment_and_why(phone_page, base_url, app, store):
    chosen = ["surf", "sunsets", "coffee", "parties"]
    phone_page.goto(base_url + "/")
    for key in chosen:
        phone_page.get_by_label(key_to_label(key), exact=True).check()
    phone_page.get_by_role("button", name="Find my segment").click()
    heading = phone_page.get_by_role("status").get_by_role("heading")
    heading.wait_for()

    model = app.extensions["segment_model"]
    features = encode_interests(dict.fromkeys(chosen, True))
    segment, _ = model.assign_user(features)
    # Labels as the checkboxes say them ("Rural tourism"), not the API's keys.
    label = ", ".join(key_to_label(key) for key in model.segment_label(segment).split(", "))
    assert heading.inner_text() == f"Your segment: {segment} ({label})"
    reasons = [key_to_label(key) for key, _ in model.top_interests(features, segment)]
    assert (
        f"What weighed most: {', '.join(reasons)}." in phone_page.get_by_role("status").inner_text()
    )
    meters = phone_page.locator("#result meter")
    assert meters.count() == model.n_segments
    shares = [float(meters.nth(i).get_attribute("value")) for i in range(model.n_segments)]
    assert shares.index(max(shares)) + 1 == segment
    assert phone_page.get_by_label(f"Segment {segment}", exact=True).count() == 1
    # The page previews: nothing about this visitor is stored.
    assert store.assignments.current("web-page") is None


def test_a_city_shows_the_room_it_would_give(phone_page, base_url, app, store):
    phone_page.goto(base_url + "/")
    phone_page.get_by_label("Surf", exact=True).check()
    phone_page.get_by_label("Your city").fill("  Sevilla ")
    phone_page.get_by_role("button", name="Find my segment").click()
    status = phone_page.get_by_role("status")
    status.get_by_role("heading").wait_for()
    segment, _ = app.extensions["segment_model"].assign_user(encode_interests({"surf": True}))
    assert (
        f"Your chat room: sevilla-{segment}, with people of segment {segment} in Sevilla."
        in status.inner_text()
    )
    assert store.assignments.current("web-page") is None and store.rooms.page(None, None, 10) == []


def test_page_fits_a_phone_and_labels_every_control(phone_page, base_url):
    phone_page.goto(base_url + "/")
    width = phone_page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"]
    boxes = phone_page.get_by_role("checkbox")
    assert boxes.count() == len(INTEREST_KEYS)
    for key in INTEREST_KEYS:
        assert phone_page.get_by_label(key_to_label(key), exact=True).count() == 1
    assert phone_page.get_by_role("group").count() == 4  # one fieldset per interest group
    # Two columns of checkboxes fit a phone: the button is not 26 rows down.
    lefts = {round(boxes.nth(i).bounding_box()["x"]) for i in range(boxes.count())}
    assert len(lefts) >= 2
    heatmap = phone_page.get_by_role("img")
    assert heatmap.get_attribute("alt")
    assert phone_page.evaluate("document.querySelector('figure img').naturalWidth") > 0


def accessibility_violations(page) -> list[str]:
    """What axe-core finds against WCAG 2.1 A and AA on the page as it is now."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: `make test` installs it (npm ci)")
    page.add_script_tag(path=str(AXE))
    results = page.evaluate(
        "axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']})"
    )
    return [f"{v['id']}: {v['help']} ({len(v['nodes'])} elements)" for v in results["violations"]]


@pytest.fixture
def axe_page(browser, base_url):
    """A phone page where axe-core, a test tool injected inline, may run despite the CSP."""
    with phone(browser, base_url, bypass_csp=True) as page:
        yield page


def test_page_passes_axe_before_and_after_an_answer(axe_page, base_url):
    axe_page.goto(base_url + "/")
    assert accessibility_violations(axe_page) == []
    axe_page.get_by_label("Museums", exact=True).check()
    axe_page.get_by_role("button", name="Find my segment").click()
    axe_page.get_by_role("status").get_by_role("heading").wait_for()
    assert accessibility_violations(axe_page) == []


def test_no_interest_says_so_rather_than_a_segment(phone_page, base_url):
    phone_page.goto(base_url + "/")
    phone_page.get_by_role("button", name="Find my segment").click()
    status = phone_page.get_by_role("status")
    status.get_by_role("heading").wait_for()
    assert status.get_by_role("heading").inner_text() == "No interest ticked"
    assert "Your segment" not in status.inner_text()
    assert phone_page.locator("#result meter").count() == 0


def test_a_long_city_does_not_widen_the_phone_page(phone_page, base_url):
    phone_page.goto(base_url + "/")
    phone_page.get_by_label("Surf", exact=True).check()
    phone_page.get_by_label("Your city").fill("Llanfair" * 12 + "gogo")  # 100 letters, the most
    phone_page.get_by_role("button", name="Find my segment").click()
    status = phone_page.get_by_role("status")
    status.get_by_role("heading").wait_for()
    assert "Your chat room:" in status.inner_text()
    assert phone_page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_segments_are_numbered_once_and_the_heatmap_reads_on_a_phone(phone_page, base_url):
    phone_page.goto(base_url + "/")
    items = phone_page.locator("#segments-heading ~ .segments > li")
    assert items.count() >= 2
    assert items.first.evaluate("item => getComputedStyle(item).listStyleType") == "none"
    assert items.first.get_by_role("heading").inner_text().startswith("Segment 1: ")
    heatmap = phone_page.locator("figure img")
    drawn = heatmap.evaluate("img => [img.naturalWidth, img.naturalHeight, img.clientWidth]")
    natural_width, natural_height, shown_width = drawn
    assert natural_height > natural_width  # interests down: a phone's shape
    assert shown_width >= 0.6 * natural_width  # its labels are not shrunk out of reading


def test_swagger_ui_renders_every_operation_offline(browser, base_url, app):
    page = browser.new_page()
    outside, refused = watch(page, base_url)
    page.goto(base_url + "/docs")
    page.locator(".opblock").first.wait_for()
    document = app.test_client().get("/openapi.json").get_json()
    operations = sum(len(item) for item in document["paths"].values())
    assert page.locator(".opblock").count() == operations
    page.locator(".opblock").first.click()  # opened: its schemas render too
    page.locator(".opblock-body").first.wait_for()
    assert outside == [] and refused == []
