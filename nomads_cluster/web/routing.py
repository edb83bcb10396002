"""How URLs are matched: numbers in ASCII digits only, and never a redirect.

Werkzeug's ``int`` converter matches any Unicode digit (an Arabic-Indic one made
``/clusters/<it>`` segment 1), and its slash-merging redirect (``/clusters//1``) answered
with an absolute URL built from the client's ``Host`` header. Here a path matches as
written or is a 404.
"""

from flask import Flask
from werkzeug.routing import IntegerConverter


class AsciiIntegerConverter(IntegerConverter):
    """``<int:…>`` of ASCII digits (and a leading ``-`` where signed)."""

    regex = r"[0-9]+"


def init_app(app: Flask) -> None:
    """Before any blueprint: rules are compiled as they are added."""
    app.url_map.converters["int"] = AsciiIntegerConverter
    app.url_map.merge_slashes = False
