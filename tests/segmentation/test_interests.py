import numpy as np
import pytest

from nomads_cluster.segmentation.interests import INTEREST_KEYS, encode_interests, label_to_key


def test_there_are_26_distinct_keys():
    assert len(INTEREST_KEYS) == 26
    assert len(set(INTEREST_KEYS)) == 26


@pytest.mark.parametrize(
    ("label", "key"),
    [
        ("Voley", "volley"),
        ("Burgers", "burguers"),
        ("Drinks at night", "drinks"),
        ("Guided visits", "guidedVisits"),
        ("Rural tourism", "ruralTourism"),
        ("Trecking", "trecking"),
        ("Mediterranean", "mediterranean"),
        (" Sunsets ", "sunsets"),
    ],
)
def test_survey_labels_map_to_keys(label, key):
    assert label_to_key(label) == key


@pytest.mark.parametrize("label", ["Yoga", "", "Voleyball", "guided"])
def test_unknown_labels_have_no_key(label):
    assert label_to_key(label) is None


def test_encode_interests_sets_chosen_columns_only():
    vector = encode_interests({"surf": True, "coffee": True, "sushi": False})
    assert vector.shape == (26,)
    assert set(np.flatnonzero(vector)) == {
        INTEREST_KEYS.index("surf"),
        INTEREST_KEYS.index("coffee"),
    }


def test_encode_interests_of_nothing_is_zero():
    assert not encode_interests({}).any()
