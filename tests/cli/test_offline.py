"""Reading files in chunks: line numbers across chunks, progress, and the survey reader."""

import gc
import io
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from threadpoolctl import threadpool_info

from nomads_cluster.cli import offline
from nomads_cluster.segmentation.interests import INTEREST_KEYS
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, load_model
from nomads_cluster.store.engine import StoreUnavailable
from nomads_cluster.validation import MAX_LISTED

HEADER = ",".join(["_id", *INTEREST_KEYS])
REPO = Path(__file__).resolve().parents[2]
SMALL_CHUNK = 256  # bytes of CSV: the header and a few rows of ~60 bytes


def csv_bytes(rows: list[str]) -> io.BytesIO:
    return io.BytesIO(("\n".join([HEADER, *rows]) + "\n").encode())


def good_row(i: int) -> str:
    return f"u{i}," + ",".join("1" if j == i % 26 else "0" for j in range(26))


def test_line_numbers_hold_across_chunks_and_skipped_lines(monkeypatch):
    monkeypatch.setattr(offline, "CHUNK_BYTES", SMALL_CHUNK)
    rows = [good_row(i) for i in range(10)]
    rows[1] += ",extra"  # line 3: skipped by the parser
    rows[5] = "u5," + ",".join(["x"] * 26)  # line 7: bad values, in a later chunk
    rows[8] += ",extra"  # line 10
    chunks = list(offline.read_interest_csv(csv_bytes(rows), "f.csv", None))
    assert len(chunks) >= 3
    bad = sorted((b.line, b.reason.split(",")[0]) for c in chunks for b in c.bad_rows)
    assert [line for line, _ in bad] == [3, 7, 10]
    ids = [i for c in chunks for i in c.ids.to_pylist()]
    assert ids == [f"u{i}" for i in range(10) if i not in (1, 5, 8)]
    features = np.vstack([c.features for c in chunks])
    assert features.argmax(axis=1).tolist() == [i % 26 for i in range(10) if i not in (1, 5, 8)]


def test_a_bad_row_lists_as_many_errors_as_the_api_and_counts_the_rest():
    rows = [good_row(0), "u1," + ",".join(["x"] * 26)]
    (chunk,) = offline.read_interest_csv(csv_bytes(rows), "f.csv", None)
    (bad,) = chunk.bad_rows
    listed, _, more = bad.reason.rpartition("; and ")
    assert listed.count(", not 0, 1, true or false") == MAX_LISTED
    assert more == f"{26 - MAX_LISTED} more"


def test_progress_reaches_the_whole_file(tmp_path, monkeypatch):
    monkeypatch.setattr(offline, "CHUNK_BYTES", SMALL_CHUNK)
    path = tmp_path / "in.csv"
    path.write_bytes(csv_bytes([good_row(i) for i in range(40)]).getvalue())
    seen: list[int] = []
    offline.assign_file(
        path, tmp_path / "out.csv", load_model(DEFAULT_MODEL_DIR), on_progress=seen.append
    )
    assert seen == sorted(seen)
    assert len(seen) >= 5
    assert seen[-1] == path.stat().st_size


def test_chunks_written_by_the_writing_thread_come_out_whole_and_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(offline, "CHUNK_BYTES", SMALL_CHUNK)
    path = tmp_path / "in.csv"
    path.write_bytes(csv_bytes([good_row(i) for i in range(20)]).getvalue())
    model = load_model(DEFAULT_MODEL_DIR)
    offline.assign_file(path, tmp_path / "out.csv", model)
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0].startswith('"_id","cluster"')
    assert [line.split(",")[0] for line in lines[1:]] == [f'"u{i}"' for i in range(20)]
    features = np.eye(26)[[i % 26 for i in range(20)]]
    segments, _ = model.assign_users(features)
    assert [int(line.split(",")[1]) for line in lines[1:]] == segments.tolist()


def test_a_write_that_fails_in_the_writing_thread_fails_the_command_and_leaves_no_file(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(offline, "CHUNK_BYTES", SMALL_CHUNK)
    path = tmp_path / "in.csv"
    path.write_bytes(csv_bytes([good_row(i) for i in range(20)]).getvalue())
    written = []

    class FullDisk(offline.pa_csv.CSVWriter):
        def write_table(self, table, max_chunksize=None):  # the second chunk's fails
            written.append(table.num_rows)
            if len(written) == 2:
                raise OSError("No space left on device")
            super().write_table(table, max_chunksize)

    monkeypatch.setattr(offline.pa_csv, "CSVWriter", FullDisk)
    with pytest.raises(OSError, match="No space left"):
        offline.assign_file(path, tmp_path / "out.csv", load_model(DEFAULT_MODEL_DIR))
    assert len(written) == 2  # nothing written after the failed chunk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_the_cycle_collector_is_paused_while_assigning_and_back_on_after_a_stop(
    tmp_path, monkeypatch
):
    rows = [good_row(0), "u1," + ",".join(["x"] * 26)]
    path = tmp_path / "in.csv"
    path.write_bytes(csv_bytes(rows).getvalue())
    seen = []
    monkeypatch.setattr(offline, "read_interest_csv", recording(seen, offline.read_interest_csv))
    with pytest.raises(offline.BadRowsError):
        offline.assign_file(path, tmp_path / "out.csv", load_model(DEFAULT_MODEL_DIR))
    assert seen == [False]  # off while the chunks were read
    assert gc.isenabled()


def recording(seen: list[bool], read):
    """``read``, noting whether the cycle collector is on as its first chunk is read."""

    def read_noting(*args):
        for n, chunk in enumerate(read(*args)):
            if n == 0:
                seen.append(gc.isenabled())
            yield chunk

    return read_noting


def chunk_ids(rows: list[str]) -> list[list[str]]:
    """The users of each chunk the reader makes of ``rows``, until the first chunk
    with a bad row (excluded)."""
    chunks = offline.read_interest_csv(csv_bytes(rows), "in.csv", None)
    return [c.ids.to_pylist() for c in itertools.takewhile(lambda c: not c.bad_rows, chunks)]


def recording_saves(store, monkeypatch, fail_at: int | None = None) -> list[list[str]]:
    """The user ids of each call to the store's save, which fails at call ``fail_at``."""
    saved: list[list[str]] = []
    save = store.assignments.save

    def recorded(records):
        saved.append([r.user_id for r in records])
        if len(saved) == fail_at:
            raise StoreUnavailable("the database is unavailable (OperationalError)")
        return save(records)

    monkeypatch.setattr(store.assignments, "save", recorded)
    return saved


def test_the_chunks_before_a_bad_row_are_stored_whole_and_in_order(tmp_path, monkeypatch, store):
    monkeypatch.setattr(offline, "CHUNK_BYTES", SMALL_CHUNK)
    rows = [good_row(i) for i in range(20)]
    rows[12] = "u12," + ",".join(["x"] * 26)
    before_bad = chunk_ids(rows)
    assert len(before_bad) >= 2  # the last of them still being stored when it is met
    path = tmp_path / "in.csv"
    path.write_bytes(csv_bytes(rows).getvalue())
    saved = recording_saves(store, monkeypatch)
    with pytest.raises(offline.BadRowsError, match="line 14"):
        offline.assign_file(path, tmp_path / "out.csv", load_model(DEFAULT_MODEL_DIR), store=store)
    assert saved == before_bad
    everyone = [f"u{i}" for i in range(20)]
    expected = [i for ids in before_bad for i in ids]
    assert [i for i in everyone if store.assignments.current(i) is not None] == expected
    assert not list(tmp_path.glob("out.csv*"))


def test_a_chunk_the_store_fails_stops_the_command_after_the_chunks_before_it(
    tmp_path, monkeypatch, store
):
    monkeypatch.setattr(offline, "CHUNK_BYTES", SMALL_CHUNK)
    rows = [good_row(i) for i in range(20)]
    chunks = chunk_ids(rows)
    path = tmp_path / "in.csv"
    path.write_bytes(csv_bytes(rows).getvalue())
    saved = recording_saves(store, monkeypatch, fail_at=2)
    with pytest.raises(StoreUnavailable):
        offline.assign_file(path, tmp_path / "out.csv", load_model(DEFAULT_MODEL_DIR), store=store)
    assert saved == chunks[:2]  # no chunk is stored after the one that failed
    everyone = [f"u{i}" for i in range(20)]
    assert [i for i in everyone if store.assignments.current(i) is not None] == chunks[0]
    assert not list(tmp_path.glob("out.csv*"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1.0),
        ("0", 0.0),
        ("2", None),  # one character: read from its byte
        ("true", 1.0),
        ("FALSE", 0.0),
        (" True ", 1.0),
        ("yes", None),
        ("", None),
    ],
)
def test_truth_values_of_a_text_column(value, expected):
    result = offline.truth_values(pa.array([b"1", value.encode()]))
    assert result[0] == 1.0
    assert np.isnan(result[1]) if expected is None else result[1] == expected


def test_survey_reader_names_unknown_options_by_line():
    survey = io.BytesIO(
        b"Timestamp,Sports,Culture,Food,Leisure\n"
        b'10/20/2021 17:21:42,"Surf, Running",Concerts,Sushi,Coffee\n'
        b"10/20/2021 17:22:00,Yoga,Concerts,Sushi,Coffee\n"
    )
    [chunk] = offline.read_survey_csv(survey, "s.csv")
    assert chunk.ids.to_pylist() == [1]
    assert [(b.line, b.reason) for b in chunk.bad_rows] == [(3, "unknown option 'Yoga'")]
    chosen = [INTEREST_KEYS[j] for j in np.flatnonzero(chunk.features[0])]
    assert chosen == ["running", "surf", "concerts", "sushi", "coffee"]


def test_assign_runs_without_the_web_layer_the_store_or_pandas(tmp_path):
    # What `nomads-cluster assign` imports to load a model, read a file and write the
    # results: a million rows take a second or two, and Flask and its kin would add a
    # tenth to them, pandas (which pyarrow's `pa.array` imports) a fifth.
    path = tmp_path / "in.csv"
    path.write_bytes(csv_bytes([good_row(1), "u2,2"]).getvalue())
    code = (
        "import sys; from pathlib import Path; from nomads_cluster.cli import main, offline; "
        "from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, load_model; "
        f"offline.assign_file(Path({str(path)!r}), Path({str(tmp_path / 'out.csv')!r}), "
        "load_model(DEFAULT_MODEL_DIR), skip_bad_rows=True); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'flask', 'werkzeug', 'prometheus_client', 'sqlalchemy', 'sklearn', 'pandas'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stderr
    assert (tmp_path / "out.csv").read_text().count("\n") == 2  # the header and u1


def test_scoring_runs_on_one_blas_thread_while_the_writer_has_the_other_core(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(csv_bytes([good_row(i) for i in range(5)]).getvalue())
    model = load_model(DEFAULT_MODEL_DIR)
    seen: list[int] = []
    assign_users = model.assign_users

    def assign_and_look(features):
        seen.extend(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")
        return assign_users(features)

    model.assign_users = assign_and_look
    offline.assign_file(path, tmp_path / "out.csv", model)
    assert seen and set(seen) == {1}
