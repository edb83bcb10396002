"""Cities as the app's users type them, and the ids of their chat rooms.

One city is one key: case, surrounding spaces, punctuation and accents do not count
("Madrid ", "MADRID" and "Mádrid" are "madrid"), and other scripts are transliterated
(python-slugify: "Москва" is "moskva"), so that a room id is a readable, URL-safe slug.
Accents are folded because mobile keyboards make them optional: users of one city type
it both ways, while two cities told apart only by an accent are rare (docs/rooms.md).
"""

import functools
import hashlib
import re
import unicodedata

from slugify import slugify

MAX_CITY_LENGTH = 100
MAX_KEY_LENGTH = 200  # a 100-character name can transliterate to more letters
# What a city may hold, in words the API's JSON Schema says too: no control character,
# and something besides spaces.
CITY_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
_ENDS_IN_NUMBER = re.compile(r"-([0-9]+)$")


def city_problem(name: str) -> str | None:
    """What makes ``name`` no city a user can give (None: it is one)."""
    if not 0 < len(name) <= MAX_CITY_LENGTH:
        return f"must be a string of 1 to {MAX_CITY_LENGTH} characters"
    if not re.fullmatch(CITY_PATTERN, name):
        return "must hold something besides spaces, and no control character"
    return None


def display_city(name: str) -> str:
    """The name as shown: NFC, without surrounding or repeated spaces."""
    return re.sub(" +", " ", unicodedata.normalize("NFC", name).strip(" "))


@functools.lru_cache(maxsize=4096)  # slugify costs more than the rest of a placement
def city_key(name: str) -> str:
    """The city's key, the first part of its room ids.

    A key never ends in "-<digits>" (that becomes "_<digits>": "district_9"), so that
    the numbers after it in a room id are always the segment and the room's. A name
    with nothing to transliterate (symbols, emoji) is keyed by a digest of its
    display: "city__" and 12 hex digits, a form no slug takes.
    """
    key = slugify(name, max_length=MAX_KEY_LENGTH, word_boundary=True)
    if not key:
        digest = hashlib.sha256(display_city(name).casefold().encode()).hexdigest()
        return f"city__{digest[:12]}"
    return _ENDS_IN_NUMBER.sub(r"_\1", key)


def room_id(key: str, segment: int, ordinal: int) -> str:
    """The id of a city's ``ordinal``-th room of a segment: madrid-3, madrid-3-2, ..."""
    base = f"{key}-{segment}"
    return base if ordinal == 1 else f"{base}-{ordinal}"
