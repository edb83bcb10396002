"""Retraining keeps segment numbers: `train --previous` (Hungarian matching of profiles)."""

import json
from itertools import permutations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import READER

from nomads_cluster.cli import main
from nomads_cluster.segmentation import training
from nomads_cluster.segmentation.fitting import fit_nmf
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, load_model
from nomads_cluster.segmentation.survey import Survey
from nomads_cluster.segmentation.training import MATCH_THRESHOLD, _unit_rows, train

# Resamples, and 3 or 5 segments, can take NMF past its 200 iterations (a warning, which
# this project's tests turn into errors): the numbering, tested here, is not affected.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def profile_of(model, number: int) -> np.ndarray:
    """The interest profile (unit component) of segment ``number``."""
    return _unit_rows(model.scorer.components)[model.numbers.index(number)]


def assert_numbers_keep_their_meaning(new, old) -> None:
    """Kept numbers pair new and old profiles alike, and no other pairing is closer."""
    kept = [n for n in new.numbers if n in old.numbers]
    assert kept, "no segment kept its number"

    def similarity(new_number: int, old_number: int) -> float:
        return float(profile_of(new, new_number) @ profile_of(old, old_number))

    assert all(similarity(n, n) >= MATCH_THRESHOLD for n in kept)
    best = max(
        sum(similarity(n, o) for n, o in zip(kept, other, strict=True))
        for other in permutations(old.numbers, len(kept))
    )
    assert sum(similarity(n, n) for n in kept) == pytest.approx(best)


def resample(survey: Survey, rows: np.ndarray, source: str) -> Survey:
    return Survey(features=survey.features[rows], sha256=source, source=source)


def naive_order_differs(survey: Survey, committed) -> bool:
    """Whether a plain retrain numbers the segments otherwise than the committed model."""
    similarity = (
        _unit_rows(fit_nmf(survey.features).components_) @ _unit_rows(committed.scorer.components).T
    )
    return list(similarity.argmax(axis=1)) != list(range(len(similarity)))


def test_retraining_on_a_resample_keeps_the_numbers(survey, committed, tmp_path):
    # The first seed whose bootstrap resample scrambles a naive retrain's numbering.
    rng = np.random.default_rng(0)
    for _ in range(20):
        resampled = resample(survey, rng.integers(0, survey.n_rows, survey.n_rows), "bootstrap")
        if naive_order_differs(resampled, committed):
            break
    else:
        pytest.fail("no resample scrambled the naive numbering: the test shows nothing")
    card = train(resampled, tmp_path, previous=committed)
    new = load_model(tmp_path)
    assert sorted(new.numbers) == [1, 2, 3, 4]
    assert_numbers_keep_their_meaning(new, committed)
    assert card["numbering"]["previous_version"] == committed.version
    assert card["numbering"]["retired"] == []
    assert all(m["previous_segment"] == m["segment"] for m in card["numbering"]["matches"])


def test_retraining_on_the_data_plus_new_answers_keeps_the_numbers(survey, committed, tmp_path):
    # New answers: survey rows with a few interests flipped, as new users might answer.
    rng = np.random.default_rng(1)
    new_rows = survey.features[rng.integers(0, survey.n_rows, 60)].copy()
    flips = rng.random(new_rows.shape) < 0.1
    new_rows[flips] = 1 - new_rows[flips]
    grown = Survey(features=np.vstack([survey.features, new_rows]), sha256="grown", source="grown")
    train(grown, tmp_path, previous=committed)
    new = load_model(tmp_path)
    assert_numbers_keep_their_meaning(new, committed)


def test_numbers_follow_the_previous_model_not_the_component_order(survey, committed, tmp_path):
    # A previous model whose segments were numbered in reverse: the retrained one, with
    # the same components in the same order, must take the reversed numbers too.
    previous_dir = tmp_path / "previous"
    previous_dir.mkdir()
    for name in ("model.pkl", "heatmap.png"):
        (previous_dir / name).write_bytes((DEFAULT_MODEL_DIR / name).read_bytes())
    card = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())
    for segment in card["segments"]:
        segment["segment"] = 5 - segment["segment"]
    (previous_dir / "model.json").write_text(json.dumps(card))
    train(survey, tmp_path / "new", previous=load_model(previous_dir))
    new = load_model(tmp_path / "new")
    assert new.numbers == (4, 3, 2, 1)
    matches = json.loads((tmp_path / "new" / "model.json").read_text())["numbering"]["matches"]
    assert [m["similarity"] for m in matches] == pytest.approx([1.0] * 4, abs=1e-9)


def test_a_new_segment_gets_a_number_never_used(survey, committed, tmp_path):
    # Five segments after four: four keep theirs, the fifth is 5.
    five = train(survey, tmp_path / "five", previous=committed, components=5)
    assert sorted(s["segment"] for s in five["segments"]) == [1, 2, 3, 4, 5]
    new_ones = [m for m in five["numbering"]["matches"] if m["previous_segment"] is None]
    assert [m["segment"] for m in new_ones] == [5]
    assert five["highest_segment_number"] == 5

    # Then three: two of 1..5 retire, and their numbers are not handed out again...
    three = train(survey, tmp_path / "three", previous=load_model(tmp_path / "five"), components=3)
    kept = {s["segment"] for s in three["segments"]}
    assert len(kept) == 3 and kept < {1, 2, 3, 4, 5}
    assert three["numbering"]["retired"] == sorted({1, 2, 3, 4, 5} - kept)
    assert three["highest_segment_number"] == 5

    # ...when a later model has room for more: its new segments start at 6.
    four = train(survey, tmp_path / "four", previous=load_model(tmp_path / "three"))
    new_numbers = {s["segment"] for s in four["segments"]} - kept
    assert new_numbers == {6}


def test_service_answers_with_the_models_own_numbers(make_app, config_for, survey, tmp_path):
    # A model numbered 2, 5, 7, 9: every answer speaks of those numbers only.
    card = training.train(survey, tmp_path / "model")
    numbers = {1: 2, 2: 5, 3: 7, 4: 9}
    for segment in card["segments"]:
        segment["segment"] = numbers[segment["segment"]]
    (tmp_path / "model" / "model.json").write_text(json.dumps(card))
    app = make_app(
        config_for(f"sqlite:///{tmp_path}/db.sqlite3", MODEL_DIR=str(tmp_path / "model"))
    )
    client = app.test_client()
    model = app.extensions["segment_model"]
    user = {"_id": "u", "interests": {"drinks": True, "parties": True, "concerts": True}}
    answer = client.post("/cluster", json=user).get_json()
    assert answer["cluster"] in {2, 5, 7, 9}
    assert (
        set(answer["scores"])
        == set(answer["explanation"]["normalised_scores"])
        == {"2", "5", "7", "9"}
    )
    assert answer["scores"][str(answer["cluster"])] == max(answer["scores"].values())
    assert answer["explanation"]["top_interests"]
    assert client.get("/users/u", headers=READER).get_json()["scores"] == answer["scores"]
    listed = client.get("/clusters").get_json()["segments"]
    assert sorted(s["segment"] for s in listed) == [2, 5, 7, 9]
    assert client.get(f"/clusters/{answer['cluster']}").get_json()["label"] == answer["label"]
    assert client.get("/clusters/1").status_code == 404
    batch = client.post("/cluster/batch", json={"users": [user]}).get_json()["results"][0]
    assert batch["cluster"] == answer["cluster"]
    assert batch["scores"] == pytest.approx(answer["scores"])
    assert model.numbers == (2, 5, 7, 9)


def test_train_command_reports_the_matching(survey_path, tmp_path):
    out = tmp_path / "m"
    arguments = ["--data", survey_path, "--out", out, "--previous", DEFAULT_MODEL_DIR]
    result = CliRunner().invoke(main, ["train", *map(str, arguments)])
    assert result.exit_code == 0, result.output
    card = json.loads((out / "model.json").read_text())
    for match in card["numbering"]["matches"]:
        assert (
            f"  {match['segment']}: " in result.output
            and f"continues segment {match['previous_segment']} ({match['similarity']:.2f})"
            in result.output
        )
