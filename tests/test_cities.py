"""Cities: one key per city however it is typed, and room ids that parse one way only."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nomads_cluster.cities import (
    CITY_PATTERN,
    MAX_CITY_LENGTH,
    city_key,
    city_problem,
    display_city,
    room_id,
)


@pytest.mark.parametrize(
    "spellings",
    [
        ("Madrid", "madrid", "MADRID", "Madrid ", "  madrid\t", "Mádrid"),
        ("São Paulo", "sao paulo", "SAO-PAULO", "São  Paulo"),
        ("L'Hospitalet de Llobregat", "l hospitalet de llobregat"),
        ("Köln", "koln", "KÖLN"),
    ],
)
def test_spellings_of_one_city_share_a_key(spellings):
    assert len({city_key(name) for name in spellings}) == 1


def test_other_scripts_are_transliterated_and_other_cities_stay_apart():
    assert city_key("Москва") == "moskva"
    keys = [city_key(name) for name in ("Madrid", "Barcelona", "Москва", "東京", "Lisboa")]
    assert len(set(keys)) == len(keys)


def test_a_name_with_nothing_to_transliterate_is_keyed_by_a_digest():
    symbols = [city_key(name) for name in ("!!!", "🏙️", "!!!  ", "☀")]
    assert symbols[0] == symbols[2]  # the same once displayed
    assert len(set(symbols)) == 3 and all(re.fullmatch(r"city__[0-9a-f]{12}", k) for k in symbols)


@pytest.mark.parametrize(
    "name, problem",
    [
        ("", True),
        ("x" * (MAX_CITY_LENGTH + 1), True),
        (" ", True),
        ("a\tb", True),
        ("a\x85b", True),
        ("!!!", False),
        ("\u3000", False),
        (" Oslo ", False),
    ],
)
def test_the_city_rule_is_the_api_schemas_pattern(name, problem):
    assert (city_problem(name) is not None) == problem
    assert (re.fullmatch(CITY_PATTERN, name) is None or len(name) > MAX_CITY_LENGTH) == problem


def test_the_display_name_keeps_the_spelling_without_stray_spaces():
    assert display_city("  São   Paulo ") == "São Paulo"
    assert display_city("Sa\u0303o Paulo") == "São Paulo"  # composed (NFC)


def test_room_ids_count_from_the_second_room_of_a_city_and_segment():
    assert room_id(city_key("Madrid"), 3, 1) == "madrid-3"
    assert room_id(city_key("Madrid"), 3, 2) == "madrid-3-2"


def test_a_city_ending_in_a_number_cannot_pass_for_a_segment():
    # "District 9", segment 3 against "District", segment 9, room 3.
    assert room_id(city_key("District 9"), 3, 1) != room_id(city_key("District"), 9, 3)
    assert not re.search(r"-[0-9]+$", city_key("District 9"))


@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=MAX_CITY_LENGTH).filter(lambda c: not city_problem(c)),
            st.integers(1, 30),
            st.integers(1, 30),
        ),
        min_size=2,
        max_size=10,
    )
)
def test_distinct_cities_segments_or_rooms_never_share_an_id(rooms):
    ids = {}
    for name, segment, ordinal in rooms:
        identity = (city_key(name), segment, ordinal)
        made = room_id(*identity)
        assert re.fullmatch(r"[a-z0-9_-]+", made)  # URL-safe as it is
        assert ids.setdefault(made, identity) == identity
