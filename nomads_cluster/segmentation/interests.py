"""The 26 interests: their keys, the survey labels they come from, and their encoding.

The order of ``INTEREST_KEYS`` is the order of the model's feature columns; the keys
are also the JSON keys the app sends, spelling included ("burguers", "trecking").
"""

import re
from collections.abc import Iterable, Mapping

import numpy as np

# The survey's four groups, in the model's column order.
INTEREST_GROUPS: dict[str, tuple[str, ...]] = {
    "Sports": (
        "climbing",
        "fitness",
        "football",
        "paddle",
        "running",
        "surf",
        "trecking",
        "volley",
    ),
    "Culture": (
        "bookstores",
        "concerts",
        "guidedVisits",
        "movies",
        "museums",
        "parks",
        "ruralTourism",
        "theaters",
    ),
    "Food": ("burguers", "chinese", "indian", "italian", "mediterranean", "sushi"),
    "Leisure": ("coffee", "drinks", "parties", "sunsets"),
}

INTEREST_KEYS: tuple[str, ...] = tuple(key for keys in INTEREST_GROUPS.values() for key in keys)

INTEREST_INDEX: dict[str, int] = {key: i for i, key in enumerate(INTEREST_KEYS)}

# Survey labels whose key is not simply the label in lower camel case.
_LABEL_EXCEPTIONS = {
    "Voley": "volley",
    "Burgers": "burguers",
    "Drinks at night": "drinks",
    "Guided visits": "guidedVisits",
    "Rural tourism": "ruralTourism",
}


_KEY_EXCEPTIONS = {key: label for label, key in _LABEL_EXCEPTIONS.items() if key != "volley"}


def key_to_label(key: str) -> str:
    """The words people read for an interest key ("ruralTourism" -> "Rural tourism")."""
    if key in _KEY_EXCEPTIONS:
        return _KEY_EXCEPTIONS[key]
    words = re.sub(r"([A-Z])", r" \1", key).lower()
    return words[:1].upper() + words[1:]


def label_to_key(label: str) -> str | None:
    """The interest key of a survey label ("Rural tourism" -> "ruralTourism"), or None."""
    label = label.strip()
    key = _LABEL_EXCEPTIONS.get(label)
    if key is None:
        words = label.split()
        key = "".join([words[0].lower(), *(w.capitalize() for w in words[1:])]) if words else ""
    return key if key in INTEREST_INDEX else None


def encode_interests(interests: Mapping[str, bool]) -> np.ndarray:
    """The 0/1 feature vector of one user's interests; a missing interest counts as false.

    Keys must already be valid interest keys (the request schema checks them).
    """
    vector = np.zeros(len(INTEREST_KEYS))
    for key, chosen in interests.items():
        if chosen:
            vector[INTEREST_INDEX[key]] = 1.0
    return vector


def interest_mask(keys: Iterable[str]) -> int:
    """The interests as one integer: bit i set when INTEREST_KEYS[i] is chosen."""
    return sum(1 << INTEREST_INDEX[key] for key in set(keys))


def mask_interests(mask: int) -> tuple[str, ...]:
    """The interest keys of a mask, in INTEREST_KEYS order."""
    return tuple(key for i, key in enumerate(INTEREST_KEYS) if mask >> i & 1)


def decode_masks(masks: np.ndarray) -> np.ndarray:
    """The 0/1 feature matrix (n, 26) of interest masks (interest_mask)."""
    bits = np.arange(len(INTEREST_KEYS))
    return ((np.asarray(masks, dtype=np.int64)[:, None] >> bits) & 1).astype(np.float64)
