"""Assigning the users of a file offline (``nomads-cluster assign``), in bounded memory.

Inputs: the survey export, a CSV with an id column and the 26 interest columns (0/1 or
true/false), or JSON Lines of /cluster bodies. Each is read in chunks of ids and a 0/1
matrix; bad rows are reported with their line numbers. CSVs are read by pyarrow's
streaming reader and written by its writer: the command never imports pandas (a
million rows: pandas' parser took twice as long, and its import a fifth of the command).
Outputs: CSV or JSON Lines.
"""

import csv
import gc
import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
from threadpoolctl import threadpool_limits

from ..cities import city_problem, display_city
from ..errors import ServiceError
from ..segmentation.interests import INTEREST_KEYS
from ..segmentation.model import SegmentModel
from ..segmentation.survey import SurveyFormatError, parse_answer_cells

if TYPE_CHECKING:  # the store (and SQLAlchemy) is imported only with --store
    from ..store.records import Assignment
    from ..store.users import UserStore

ID_COLUMNS = ("_id", "id", "user_id")  # looked for in this order
CITY_COLUMN = "city"  # optional: the user's city, as in a /cluster body
CHUNK_BYTES = 2 << 20  # of a CSV: ~30,000 rows of the 26-column format, ~7 MB of features
CHUNK_ROWS = 50_000  # of JSON Lines: ~10 MB of features and scores
TRUTH = {b"0": 0.0, b"1": 1.0, b"false": 0.0, b"true": 1.0}  # a cell's bytes, lower case


class InputFormatError(ServiceError, ValueError):
    """The input cannot be read at all; the message says where and why."""


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


@dataclass
class Chunk:
    """Valid users of a part of the input, and the bad rows met there."""

    # A CSV's ids: an Arrow string array (no Python object per id); the survey's: an
    # Arrow integer array of row numbers; JSON Lines' ids: a list, of str or int as given.
    ids: pa.Array | list[Any]
    features: np.ndarray
    bad_rows: list[BadRow] = field(default_factory=list)
    bytes_read: int = 0  # of the input so far, for the progress bar
    cities: list[str | None] | None = None  # per user, when the input has a city column


def detect_format(path: Path) -> str:
    """jsonl by suffix; for a CSV, its header tells the 26-column format from the survey."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "jsonl"
    with path.open("rb") as file:
        columns = csv_header(file, path.name)
    if set(INTEREST_KEYS) <= set(columns):
        return "csv"
    if columns and columns[0].strip().lower() == "timestamp":
        return "survey"
    raise InputFormatError(
        f"{path.name}: cannot tell the format from the header: expected the survey export "
        "(Timestamp, then the questions), an id column with the 26 interest columns, "
        "or a .jsonl file; or say --format"
    )


def csv_header(file: IO[bytes], name: str) -> list[str]:
    """The column names of a CSV; the file is left at its start."""
    first_line = file.readline()
    file.seek(0)
    try:
        columns = next(csv.reader([first_line.decode("utf-8-sig")]), [])
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InputFormatError(f"{name}: not a CSV with a header ({exc})") from None
    if not columns:
        raise InputFormatError(f"{name}: not a CSV with a header (its first line is empty)")
    return columns


def _csv_batches(
    file: IO[bytes], name: str, columns: list[str], text_columns: list[str]
) -> Iterator[tuple[pa.RecordBatch, np.ndarray, list[BadRow]]]:
    """(the columns' cells, as text in ``text_columns`` and as bytes in the others, the
    line number of each row, the rows skipped for a wrong number of fields) per chunk of
    a CSV. Text that is not UTF-8 stops it.

    Every row's fields are counted, whichever columns are kept: a row with too many is
    reported, not read. A blank line is a row of empty cells, so that line numbers hold.
    """
    skipped: list[BadRow] = []

    def skip(row: pa_csv.InvalidRow) -> str:
        reason = f"expected {row.expected_columns} fields, saw {row.actual_columns}"
        skipped.append(BadRow(row.number, reason))
        return "skip"

    try:
        reader = pa_csv.open_csv(
            file,
            # One thread: the rows' numbers are known only then, and the other core
            # writes the results (ResultWriter).
            read_options=pa_csv.ReadOptions(block_size=CHUNK_BYTES, use_threads=False),
            parse_options=pa_csv.ParseOptions(
                newlines_in_values=True, ignore_empty_lines=False, invalid_row_handler=skip
            ),
            convert_options=pa_csv.ConvertOptions(
                # Bytes, turned into text by _as_text: it can say on which line they
                # are not UTF-8, where the reader's own error names no line. The
                # interests stay bytes: checking that they are text took a quarter of
                # the reading, and a cell that is not 0, 1, true or false is bad anyway.
                include_columns=columns,
                column_types=dict.fromkeys(columns, pa.binary()),
            ),
        )
        rows_before, skipped_lines = 0, []
        for batch in reader:
            # Row r is on line r + 2 (the header is line 1), after the lines skipped.
            lines = np.arange(rows_before, rows_before + batch.num_rows) + 2
            skipped_lines += [bad.line for bad in skipped]
            for line in sorted(skipped_lines):
                lines[lines >= line] += 1
            rows_before += batch.num_rows
            yield _as_text(batch, text_columns, lines, name), lines, skipped
            skipped = []
    except pa.ArrowInvalid as exc:
        raise InputFormatError(f"{name}: {exc}") from None


def _as_text(
    batch: pa.RecordBatch, text_columns: list[str], lines: np.ndarray, name: str
) -> pa.RecordBatch:
    """The batch with ``text_columns`` as UTF-8 text; else an error naming the first line
    where one is not."""
    columns = []
    for column_name, column in zip(batch.schema.names, batch.columns, strict=True):
        if column_name in text_columns:
            # The same bytes seen as text, once checked: a cast would import
            # pyarrow.compute, a noticeable part of the command's start-up.
            column = pa.Array.from_buffers(
                pa.string(), len(column), column.buffers(), column.null_count, column.offset
            )
            try:
                column.validate(full=True)
            except pa.ArrowInvalid as exc:
                problem = _first_non_utf8_cell(batch.select(text_columns), lines, name)
                raise InputFormatError(problem or f"{name}: {exc}") from None
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _first_non_utf8_cell(batch: pa.RecordBatch, lines: np.ndarray, name: str) -> str | None:
    rows = zip(lines, *(column.to_pylist() for column in batch.columns), strict=True)
    for line, *cells in rows:
        for column, cell in zip(batch.schema.names, cells, strict=True):
            try:
                cell.decode()
            except UnicodeDecodeError as exc:
                return (
                    f"{name}, line {line}: {column} is not UTF-8 text ({exc.reason} at byte "
                    f"{exc.start + 1} of {cell!r})"
                )
    return None


def read_interest_csv(file: IO[bytes], name: str, id_column: str | None) -> Iterator[Chunk]:
    """Chunks of a CSV with an id column and the 26 interest columns (others ignored)."""
    columns = csv_header(file, name)
    missing = [key for key in INTEREST_KEYS if key not in columns]
    if missing:
        raise InputFormatError(f"{name}: missing interest columns: {', '.join(missing)}")
    if id_column is None:
        id_column = next((c for c in ID_COLUMNS if c in columns), None)
        if id_column is None:
            raise InputFormatError(
                f"{name}: no id column ({', '.join(ID_COLUMNS)}); name it with --id-column"
            )
    elif id_column not in columns:
        raise InputFormatError(f"{name}: no column {id_column!r}")
    text_columns = [id_column, *([CITY_COLUMN] if CITY_COLUMN in columns else [])]
    kept = [*text_columns, *INTEREST_KEYS]
    for batch, lines, skipped in _csv_batches(file, name, kept, text_columns):
        values = np.empty((batch.num_rows, len(INTEREST_KEYS)), order="F")  # by column
        for j, key in enumerate(INTEREST_KEYS):
            values[:, j] = truth_values(batch.column(key))
        ids = batch.column(id_column)  # as written: an id "007" stays "007"
        bad = np.isnan(values).any(axis=1) | (np.diff(_offsets(ids)) == 0)
        cities = None
        if CITY_COLUMN in columns:
            cities = [city or None for city in batch.column(CITY_COLUMN).to_pylist()]
            bad |= np.array([c is not None and city_problem(c) is not None for c in cities])
            cities = [None if c is None else display_city(c) for c in cities]
        if not bad.any():
            yield Chunk(ids, values, skipped, file.tell(), cities)
            continue
        described = (
            _describe_bad_row(batch.slice(i, 1).to_pylist()[0], lines[i], id_column)
            for i in np.flatnonzero(bad)
        )
        bad_rows = [*skipped, *described]
        if cities is not None:
            cities = [city for city, is_bad in zip(cities, bad, strict=True) if not is_bad]
        valid = arrow_array(np.flatnonzero(~bad))
        yield Chunk(ids.take(valid), values[~bad], bad_rows, file.tell(), cities)


def _offsets(column: pa.BinaryArray | pa.StringArray) -> np.ndarray:
    """Where each cell starts in the array's text, and where the last ends (no copy)."""
    return np.frombuffer(column.buffers()[1], np.int32, len(column) + 1, column.offset * 4)


def truth_values(column: pa.BinaryArray) -> np.ndarray:
    """Cells (bytes) as 0.0/1.0, NaN where one holds anything but 0, 1, true or false."""
    offsets = _offsets(column)
    if column.null_count == 0 and (np.diff(offsets) == 1).all():
        # Every cell one character, as in nearly every file: its byte is its value
        # (looking each cell up took three times as long as reading the file).
        chars = np.frombuffer(column.buffers()[2], np.uint8, len(column), offsets[0])
        values = chars - np.float64(ord("0"))
        values[(chars != ord("0")) & (chars != ord("1"))] = np.nan
        return values
    encoded = column.dictionary_encode()
    texts = encoded.dictionary.to_pylist()
    by_text = np.array([TRUTH.get(text.strip().lower(), np.nan) for text in texts] + [np.nan])
    indices = encoded.indices.fill_null(len(texts)).to_numpy()
    return by_text[indices]


def _describe_bad_row(cells: dict[str, Any], line: int, id_column: str) -> BadRow:
    """What is wrong with a row: its id and city are text, its interests bytes."""
    from ..validation import join_listed  # with pydantic: only once a row is bad

    if not any(cells.values()):
        return BadRow(int(line), "empty line")
    problems = [] if cells[id_column] else [f"{id_column} is empty"]
    city = cells.get(CITY_COLUMN)
    if city and (problem := city_problem(city)):
        problems.append(f"{CITY_COLUMN} {problem}")
    for key in INTEREST_KEYS:
        cell = cells[key]
        if not cell:
            problems.append(f"{key} is empty")
        elif cell.strip().lower() not in TRUTH:
            text = cell.decode(errors="backslashreplace")
            problems.append(f"{key} is {text!r}, not 0, 1, true or false")
    return BadRow(int(line), join_listed(problems))  # as many as the API lists


def read_survey_csv(file: IO[bytes], name: str) -> Iterator[Chunk]:
    """Chunks of the survey export; a user's id is their row number (1 = first answer)."""
    columns = csv_header(file, name)
    for batch, lines, skipped in _csv_batches(file, name, columns, text_columns=columns):
        ids, rows, bad_rows = [], [], list(skipped)
        cells_by_row = zip(*(column.to_pylist() for column in batch.columns), strict=True)
        for line, row in zip(lines, cells_by_row, strict=True):
            if not any(row):
                bad_rows.append(BadRow(int(line), "empty line"))
                continue
            answers = list(row[1:])  # after the timestamp
            try:
                rows.append(parse_answer_cells(answers, f"line {line}"))
                ids.append(int(line) - 1)
            except SurveyFormatError as exc:
                bad_rows.append(BadRow(int(line), str(exc).split(": ", 1)[1]))
        features = np.array(rows).reshape(len(rows), len(INTEREST_KEYS))
        # Numbers, so that CSV and JSON Lines results write them alike (unquoted).
        yield Chunk(arrow_array(np.array(ids, np.int64)), features, bad_rows, file.tell())


def read_jsonl(file: IO[bytes], name: str) -> Iterator[Chunk]:
    """Chunks of JSON Lines, one /cluster body per line; blank lines are skipped."""
    # The API's own schema (pydantic is imported only for this format).
    from pydantic import ValidationError

    from ..schemas import ClusterRequest, body_errors
    from ..validation import summarize

    ids, rows, cities, bad_rows = [], [], [], []

    def chunk() -> Chunk:
        features = np.array(rows).reshape(-1, len(INTEREST_KEYS))
        return Chunk(ids, features, bad_rows, file.tell(), cities)

    for line, raw in enumerate(file, start=1):
        if raw.strip():
            try:
                body = ClusterRequest.model_validate_json(raw)
            except ValidationError as exc:
                bad_rows.append(BadRow(line, summarize(body_errors(exc))))
            else:
                ids.append(body.user_id)
                rows.append([float(v) for v in vars(body.interests).values()])
                cities.append(body.city)
        if len(rows) + len(bad_rows) >= CHUNK_ROWS:
            yield chunk()
            ids, rows, cities, bad_rows = [], [], [], []
    yield chunk()


class SecondThread:
    """Runs one task at a time on a thread of its own, while the caller goes on:
    ``submit`` first waits for the task before it (tasks run in order, one in
    flight) and raises that task's error, as ``wait`` and ``close`` do."""

    def __init__(self, name: str):
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._running: Future[Any] | None = None

    def submit(self, task: Callable[..., Any], *args: Any) -> None:
        self.wait()
        self._running = self._thread.submit(task, *args)

    def wait(self) -> None:
        """Until the running task is done; its error, if it failed, raised here."""
        running, self._running = self._running, None
        if running is not None:
            running.result()

    def close(self) -> None:
        """Wait for the running task, then stop the thread (even if the task failed)."""
        try:
            self.wait()
        finally:
            self._thread.shutdown()


class ResultWriter:
    """Writes id, cluster and scores: CSV (by pyarrow) or JSON Lines (by suffix)."""

    def __init__(self, file: IO[bytes], jsonl: bool, model: SegmentModel):
        self.file, self.jsonl, self.model = file, jsonl, model
        self._csv: pa_csv.CSVWriter | None = None
        # pyarrow formats and writes a CSV without holding the GIL: each chunk is
        # written on a second thread (and core) while the next one is read and scored.
        self._writing = SecondThread("write-csv")

    def write(self, ids: pa.Array | list[Any], segments: np.ndarray, scores: np.ndarray) -> None:
        if self.jsonl:
            by_number = self.model.scores_by_number
            lines = (
                json.dumps({"_id": i, "cluster": c, "scores": by_number(s)}) + "\n"
                for i, c, s in zip(
                    _python_ids(ids), segments.tolist(), scores.tolist(), strict=True
                )
            )
            self.file.write("".join(lines).encode())
            return
        if isinstance(ids, pa.Array):
            id_column = ids
        else:
            id_column = pa.array([str(i) for i in ids], pa.string())
        table = pa.table(
            {
                "_id": id_column,
                "cluster": arrow_array(segments.astype(np.int32)),
                **{
                    f"score_{self.model.score_keys[j]}": arrow_array(scores[:, j])
                    for j in self.model.number_order
                },
            }
        )
        if self._csv is None:
            options = pa_csv.WriteOptions(quoting_style="needed")
            self._csv = pa_csv.CSVWriter(self.file, table.schema, write_options=options)
        self._writing.submit(self._csv.write_table, table)

    def close(self) -> None:
        """Write what is left; on error, stop writing (the output is thrown away)."""
        if self._csv is None and not self.jsonl:  # no user at all: the header alone
            n_scores = len(self.model.score_keys)
            self.write(pa.array([], pa.string()), np.empty(0, int), np.empty((0, n_scores)))
        self._writing.close()
        if self._csv is not None:
            self._csv.close()


@dataclass
class AssignSummary:
    assigned: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)


class BadRowsError(ServiceError, ValueError):
    """A bad row met with on_error="stop"."""

    def __init__(self, name: str, bad_row: BadRow):
        super().__init__(f"{name}, line {bad_row.line}: {bad_row.reason}")
        self.bad_row = bad_row


def assign_file(
    input_path: Path,
    output_path: Path,
    model: SegmentModel,
    *,
    input_format: str | None = None,
    id_column: str | None = None,
    skip_bad_rows: bool = False,
    store: "UserStore | None" = None,
    on_progress: Callable[[int], None] = lambda bytes_read: None,
) -> AssignSummary:
    """Assign every user of ``input_path`` and write the results to ``output_path``.

    The output appears only when the whole input went through (written beside it, then
    renamed): a stop on a bad row leaves no half-written file. With ``store`` the
    results are also stored, one transaction per chunk.
    """
    input_format = input_format or detect_format(input_path)
    jsonl_output = output_path.suffix.lower() in (".jsonl", ".ndjson")
    partial = output_path.with_name(output_path.name + ".partial")
    summary = AssignSummary()
    # One BLAS thread: the scoring's matrix products are small, and a second thread only
    # takes the core the writer needs (docs/performance.md, "Files offline").
    with (
        input_path.open("rb") as source,
        partial.open("wb") as sink,
        threadpool_limits(limits=1, user_api="blas"),
        cycle_collector_paused(),
    ):
        if input_format == "csv":
            chunks = read_interest_csv(source, input_path.name, id_column)
        elif input_format == "survey":
            chunks = read_survey_csv(source, input_path.name)
        else:
            chunks = read_jsonl(source, input_path.name)
        writer = ResultWriter(sink, jsonl_output, model)
        # Each chunk is stored (a transaction that mostly waits on the database) while
        # the next one is read and scored; one in flight, so memory stays bounded.
        storing = SecondThread("store")
        try:
            for chunk in chunks:
                if chunk.bad_rows and not skip_bad_rows:
                    raise BadRowsError(input_path.name, min(chunk.bad_rows, key=_by_line))
                summary.bad_rows += chunk.bad_rows
                segments, scores = model.assign_users(chunk.features)
                writer.write(chunk.ids, segments, scores)
                if store is not None:
                    records = _records(chunk, segments, scores, model)
                    storing.submit(store.assignments.save, records)
                summary.assigned += len(chunk.ids)
                on_progress(chunk.bytes_read)
            storing.close()
            writer.close()
        except BaseException:
            # The chunk being stored is committed or not, whole, before this stops: the
            # chunks before a failure stay stored.
            with suppress(Exception):
                storing.close()
            with suppress(Exception):
                writer.close()  # before the file closes under its thread
            sink.close()
            partial.unlink()
            raise
    partial.replace(output_path)
    summary.bad_rows.sort(key=_by_line)
    return summary


@contextmanager
def cycle_collector_paused() -> Iterator[None]:
    """Python's cycle collector off for the block. A chunk makes hundreds of thousands
    of objects (its records, rows and parameters), none in a cycle: the collector,
    started by their number, would walk them again and again for nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def arrow_array(values: np.ndarray) -> pa.Array:
    """A 1-D numeric array as Arrow's, sharing its memory.

    Not ``pa.array``: its first call imports pandas (to tell a Series from an array),
    a fifth of the command's time on a million rows.
    """
    values = np.ascontiguousarray(values)
    arrow_type = pa.from_numpy_dtype(values.dtype)
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values)])


def _by_line(bad_row: BadRow) -> int:
    return bad_row.line


def _python_ids(ids: pa.Array | list[Any]) -> list[Any]:
    return ids.to_pylist() if isinstance(ids, pa.Array) else ids


def _records(
    chunk: Chunk, segments: np.ndarray, scores: np.ndarray, model: SegmentModel
) -> list["Assignment"]:
    from ..store.records import Assignment, chosen_interests

    return [
        Assignment.scored(
            model, user_id, chosen_interests(features), segment, user_scores, "assign", city
        )
        for user_id, features, segment, user_scores, city in zip(
            _python_ids(chunk.ids),
            chunk.features.tolist(),  # Python numbers: faster to look at one by one
            segments.tolist(),
            scores.tolist(),
            chunk.cities or [None] * len(chunk.features),
            strict=True,
        )
    ]
