"""The web page at / and its icon, as served (the browser tests drive the page)."""

from nomads_cluster.segmentation.interests import key_to_label


def test_the_page_names_segments_with_the_checkboxes_words(client, app):
    page = client.get("/").get_data(as_text=True)
    for segment in app.extensions["segment_model"].card.segments:
        words = ", ".join(key_to_label(key) for key in segment.label.split(", "))
        assert f"Segment {segment.segment}: {words}</h3>" in page


def test_the_icon_is_served_where_browsers_look_for_it(client):
    page = client.get("/").get_data(as_text=True)
    assert 'rel="icon"' in page
    with client.get("/favicon.ico") as icon:  # a file answer: closed once read
        assert icon.status_code == 200
        assert icon.mimetype == "image/svg+xml"
        assert icon.get_data().startswith(b"<svg")
