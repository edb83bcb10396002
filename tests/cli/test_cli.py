"""The command line: assign (files in, results out), ingest, train --from-db, db upgrade."""

import csv
import json

import numpy as np
import pytest

from nomads_cluster.cli import main
from nomads_cluster.segmentation.interests import INTEREST_KEYS
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, load_model
from nomads_cluster.segmentation.survey import read_survey
from nomads_cluster.store.migrations import head_revision

HEADER = ",".join(["_id", *INTEREST_KEYS])


@pytest.fixture
def model():
    return load_model(DEFAULT_MODEL_DIR)


@pytest.fixture
def cli_env(monkeypatch, database_url, runner):
    """The command line on the test database, migrated as a release phase does."""
    monkeypatch.setenv("NOMADS_DATABASE_URL", database_url)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    upgraded = runner.invoke(main, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    return database_url


def write_csv(path, rows: list[str]) -> None:
    path.write_text("\n".join([HEADER, *rows]) + "\n")


def random_users(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, 26)) < 0.3).astype(float)


def read_results(path) -> list[dict]:
    with path.open() as file:
        return list(csv.DictReader(file))


def test_assign_csv_gives_the_services_segments_and_scores(runner, tmp_path, model):
    users = random_users(500)
    write_csv(
        tmp_path / "in.csv",
        [f"u{i}," + ",".join(str(int(v)) for v in row) for i, row in enumerate(users)],
    )
    result = runner.invoke(
        main, ["assign", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv")]
    )
    assert result.exit_code == 0, result.output
    assert "assigned 500 users" in result.output
    rows = read_results(tmp_path / "out.csv")
    assert [row["_id"] for row in rows] == [f"u{i}" for i in range(500)]
    for row, user in zip(rows, users, strict=True):
        segment, components = model.assign_user(user)
        scores = model.scores_by_number(components)
        assert int(row["cluster"]) == segment
        assert {j: float(row[f"score_{j}"]) for j in scores} == pytest.approx(scores, abs=1e-12)


def test_assign_reads_true_false_and_ignores_other_columns(runner, tmp_path, model):
    path = tmp_path / "in.csv"
    path.write_text(
        "note,id,"
        + ",".join(INTEREST_KEYS)
        + "\n"
        + "x,007,"
        + ",".join(["true", "False"] * 13)
        + "\n"
    )
    result = runner.invoke(main, ["assign", str(path), "-o", str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    [row] = read_results(tmp_path / "out.csv")
    assert row["_id"] == "007"  # ids stay text: leading zeros kept
    assert int(row["cluster"]) == model.assign_user(np.array([1.0, 0.0] * 13))[0]


def test_assign_jsonl_keeps_id_types_and_writes_jsonl(runner, tmp_path, model):
    bodies = [{"_id": 1, "interests": {"surf": True}}, {"_id": "b", "interests": {"museums": 1}}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(b) + "\n" for b in bodies) + "\n")
    result = runner.invoke(
        main, ["assign", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl")]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["_id"] for line in lines] == [1, "b"]
    surf = np.zeros(26)
    surf[INTEREST_KEYS.index("surf")] = 1
    assert lines[0]["cluster"] == model.assign_user(surf)[0]
    assert set(lines[0]["scores"]) == {"1", "2", "3", "4"}


def test_assign_survey_export_numbers_users_by_row(runner, tmp_path, survey_path, model):
    result = runner.invoke(main, ["assign", str(survey_path), "-o", str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    rows = read_results(tmp_path / "out.csv")
    segments, _ = model.assign_users(read_survey(survey_path).features)
    assert [row["_id"] for row in rows] == [str(i) for i in range(1, len(segments) + 1)]
    assert [int(row["cluster"]) for row in rows] == segments.tolist()
    # Row numbers are numbers in both outputs: unquoted in CSV, JSON numbers in JSON Lines.
    assert (tmp_path / "out.csv").read_text().splitlines()[1].startswith("1,")
    runner.invoke(main, ["assign", str(survey_path), "-o", str(tmp_path / "out.jsonl")])
    first = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert first["_id"] == 1


def test_assign_counts_in_words(runner, tmp_path):
    write_csv(tmp_path / "in.csv", ["u1," + ",".join(["1"] * 26), "u2," + ",".join(["2"] * 26)])
    result = runner.invoke(
        main, ["assign", str(tmp_path / "in.csv"), "-o", str(tmp_path / "o.csv"), "--skip-bad-rows"]
    )
    assert "assigned 1 user, skipped 1 bad row: wrote" in result.output


BAD_ROWS = [
    ("u1," + ",".join(["1"] * 26), None),
    ("u2," + ",".join(["2"] + ["0"] * 25), "climbing is '2'"),
    ("u3," + ",".join(["1"] * 27), "expected 27 fields, saw 28"),
    ("", "empty line"),
    ("u5," + ",".join(["yes"] + ["0"] * 25), "climbing is 'yes'"),
    ("," + ",".join(["0"] * 26), "_id is empty"),
    ("u7," + ",".join([""] + ["0"] * 25), "climbing is empty"),
    ("u8," + ",".join(["0"] * 26), None),
    ("u9,1,0", "expected 27 fields, saw 3"),
]


def test_assign_stops_at_the_first_bad_row_and_writes_nothing(runner, tmp_path):
    write_csv(tmp_path / "in.csv", [row for row, _ in BAD_ROWS])
    out = tmp_path / "out.csv"
    result = runner.invoke(main, ["assign", str(tmp_path / "in.csv"), "-o", str(out)])
    assert result.exit_code == 1
    assert "in.csv, line 3: climbing is '2', not 0, 1, true or false" in result.output
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "in.csv"]  # no partial file either


def test_assign_skips_bad_rows_and_names_each_line(runner, tmp_path):
    write_csv(tmp_path / "in.csv", [row for row, _ in BAD_ROWS])
    out = tmp_path / "out.csv"
    result = runner.invoke(
        main, ["assign", str(tmp_path / "in.csv"), "-o", str(out), "--skip-bad-rows"]
    )
    assert result.exit_code == 0, result.output
    for line, (_, reason) in enumerate(BAD_ROWS, start=2):
        if reason:
            assert f"in.csv, line {line}: " in result.output
            assert reason in result.output.split(f"line {line}: ")[1].splitlines()[0]
    assert "skipped 7 bad rows" in result.output
    assert [row["_id"] for row in read_results(out)] == ["u1", "u8"]


def test_assign_jsonl_bad_lines_say_where(runner, tmp_path):
    lines = [
        '{"_id": 1, "interests": {"surf": true}}',
        '{"_id": 2, "interests": {"surfing": true}}',
        "not json",
        '{"_id": 4, "interests": {}}',
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        main, ["assign", str(tmp_path / "in.jsonl"), "-o", str(out), "--skip-bad-rows"]
    )
    assert result.exit_code == 0, result.output
    assert "in.jsonl, line 2: #/interests/surfing unknown interest 'surfing'" in result.output
    assert "in.jsonl, line 3: # Invalid JSON" in result.output
    assert [json.loads(line)["_id"] for line in out.read_text().splitlines()] == [1, 4]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "not a CSV with a header"),
        ("_id,surf\nu1,1\n", "cannot tell the format"),
        ("name," + ",".join(INTEREST_KEYS) + "\n", "no id column (_id, id, user_id)"),
    ],
)
def test_assign_unreadable_csv_is_a_clear_error(runner, tmp_path, content, message):
    (tmp_path / "in.csv").write_text(content)
    result = runner.invoke(
        main, ["assign", str(tmp_path / "in.csv"), "-o", str(tmp_path / "o.csv")]
    )
    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "o.csv").exists()


def test_assign_names_the_line_whose_text_is_not_utf8(runner, tmp_path):
    rows = ["u1," + ",".join(["0"] * 26), "M\xe1laga," + ",".join(["1"] * 26)]
    (tmp_path / "in.csv").write_bytes("\n".join([HEADER, *rows, ""]).encode("latin-1"))
    result = runner.invoke(
        main, ["assign", str(tmp_path / "in.csv"), "-o", str(tmp_path / "o.csv")]
    )
    assert result.exit_code == 1
    assert "in.csv, line 3: _id is not UTF-8 text" in result.output
    assert not (tmp_path / "o.csv").exists()


def test_assign_of_a_header_alone_writes_the_header_alone(runner, tmp_path):
    write_csv(tmp_path / "in.csv", [])
    out = tmp_path / "out.csv"
    result = runner.invoke(main, ["assign", str(tmp_path / "in.csv"), "-o", str(out)])
    assert "assigned 0 users" in result.output
    [header] = out.read_text().splitlines()
    assert header.startswith('"_id","cluster","score_')


def test_assign_missing_interest_columns_are_named(runner, tmp_path):
    (tmp_path / "in.csv").write_text("_id,surf\nu1,1\n")
    result = runner.invoke(
        main, ["assign", str(tmp_path / "in.csv"), "-o", str(tmp_path / "o.csv"), "--format", "csv"]
    )
    assert result.exit_code == 1
    assert "missing interest columns: climbing, fitness" in result.output


def test_assign_output_must_be_csv_or_jsonl(runner, tmp_path):
    write_csv(tmp_path / "in.csv", [])
    result = runner.invoke(
        main, ["assign", str(tmp_path / "in.csv"), "-o", str(tmp_path / "o.txt")]
    )
    assert result.exit_code == 2
    assert "use a .csv or .jsonl file" in result.output


def test_assign_store_writes_every_result_to_the_database(
    runner, tmp_path, cli_env, config_for, make_app
):
    users = random_users(30, seed=4)
    write_csv(
        tmp_path / "in.csv",
        [f"s{i}," + ",".join(str(int(v)) for v in row) for i, row in enumerate(users)],
    )
    out = tmp_path / "out.csv"
    result = runner.invoke(main, ["assign", str(tmp_path / "in.csv"), "-o", str(out), "--store"])
    assert result.exit_code == 0, result.output
    store = make_app(config_for(cli_env)).extensions["user_store"]
    for row in read_results(out):
        stored = store.assignments.current(row["_id"])
        assert stored.cluster == int(row["cluster"])
        assert stored.source == "assign"


def test_assign_store_places_users_of_a_city_column_in_rooms(
    runner, tmp_path, cli_env, config_for, make_app
):
    header = ",".join(["_id", "city", *INTEREST_KEYS])
    cells = ",".join("1" if key == "surf" else "0" for key in INTEREST_KEYS)
    lines = [
        header,
        f"c1, Madrid ,{cells}",
        f"c2,MADRID,{cells}",
        f"c3,,{cells}",
        f"c4,   ,{cells}",
    ]
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.csv"
    command = ["assign", str(tmp_path / "in.csv"), "-o", str(out), "--store"]
    refused = runner.invoke(main, command)
    assert refused.exit_code == 1
    assert "in.csv, line 5: city must hold something besides spaces" in refused.output
    result = runner.invoke(main, [*command, "--skip-bad-rows"])
    assert result.exit_code == 0, result.output
    store = make_app(config_for(cli_env)).extensions["user_store"]
    first, second, no_city = (store.assignments.current(user) for user in ("c1", "c2", "c3"))
    assert (first.city, second.city, no_city.city) == ("Madrid", "MADRID", None)
    assert first.room_id == second.room_id == f"madrid-{first.cluster}"
    assert no_city.room_id is None and store.assignments.current("c4") is None


def test_assign_jsonl_takes_the_city_of_each_body(runner, tmp_path, cli_env, config_for, make_app):
    bodies = [
        {"_id": 1, "interests": {"surf": True}, "city": "Oslo"},
        {"_id": 2, "interests": {"surf": True}},
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(b) for b in bodies) + "\n")
    command = ["assign", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o.csv"), "--store"]
    assert runner.invoke(main, command).exit_code == 0
    store = make_app(config_for(cli_env)).extensions["user_store"]
    assert store.assignments.current("1").room_id.startswith("oslo-")
    assert store.assignments.current("2").room_id is None


def test_ingest_skips_known_answers_and_train_from_db_matches_the_file(
    runner, tmp_path, cli_env, survey_path
):
    first = runner.invoke(main, ["ingest", str(survey_path)])
    assert first.exit_code == 0, first.output
    n_rows = read_survey(survey_path).n_rows
    assert f"{n_rows} new answers stored, 0 already known" in first.output
    again = runner.invoke(main, ["ingest", str(survey_path)])
    assert f"0 new answers stored, {n_rows} already known" in again.output

    result = runner.invoke(main, ["train", "--from-db", "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    from_db, committed = load_model(tmp_path / "m"), load_model(DEFAULT_MODEL_DIR)
    np.testing.assert_allclose(from_db.scorer.components, committed.scorer.components, atol=1e-9)
    assert from_db.card.training_data.rows == n_rows


def test_train_from_an_empty_database_says_to_ingest(runner, tmp_path, cli_env, monkeypatch):
    # The survey file is not needed from the database: even where it is missing.
    monkeypatch.setenv("NOMADS_SURVEY_PATH", str(tmp_path / "nowhere.csv"))
    result = runner.invoke(main, ["train", "--from-db", "--out", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "run ingest first" in result.output


def test_train_on_a_missing_survey_says_which(runner, tmp_path):
    missing = tmp_path / "nowhere.csv"
    result = runner.invoke(main, ["train", "--data", str(missing), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert f"{missing} is not a file" in result.output


def test_db_upgrade_reports_the_revision_and_serves_the_committed_model_once(
    runner, database_url, monkeypatch, committed
):

    monkeypatch.setenv("NOMADS_DATABASE_URL", database_url)
    first = runner.invoke(main, ["db", "upgrade"])
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert lines[0].endswith(f"-> {head_revision()}")
    assert lines[1] == f"the registry serves {committed.version}, filed from {DEFAULT_MODEL_DIR}"
    again = runner.invoke(main, ["db", "upgrade"])
    assert again.output.splitlines() == [f"database schema: {head_revision()} -> {head_revision()}"]


@pytest.mark.parametrize("value", ["\u00b2", "\uff14", "0", "99", "four"])
def test_components_are_ascii_digits_in_range_or_auto(runner, value):
    result = runner.invoke(main, ["train", "--components", value])
    assert result.exit_code == 2
    assert "a number of segments from" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
