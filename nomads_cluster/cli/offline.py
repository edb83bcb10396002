"""Assigning the users of a file offline (``nomads-cluster assign``), in bounded memory.

Inputs: the survey export, a CSV with an id column and the 26 interest columns (0/1 or
true/false), or JSON Lines of /cluster bodies. Each is read in chunks of ids and a 0/1
matrix; bad rows are reported with their line numbers. Outputs: CSV (written by
pyarrow: pandas' ``to_csv`` alone took longer than the whole of the rest) or JSON Lines.
"""

import json
import re
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from ..cities import city_problem, display_city
from ..segmentation.interests import INTEREST_KEYS
from ..segmentation.model import SegmentModel
from ..segmentation.survey import SurveyFormatError, parse_answer_cells

if TYPE_CHECKING:  # the store (and SQLAlchemy) is imported only with --store
    from ..store.users import Assignment, UserStore

ID_COLUMNS = ("_id", "id", "user_id")  # looked for in this order
CITY_COLUMN = "city"  # optional: the user's city, as in a /cluster body
CHUNK_ROWS = 50_000  # ~10 MB of features and scores per chunk
TRUTH = {"0": 0.0, "1": 1.0, "false": 0.0, "true": 1.0}  # cell text, lower case


class InputFormatError(ValueError):
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
    try:
        columns = [str(column) for column in pd.read_csv(file, nrows=0).columns]
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"{name}: not a CSV with a header ({exc})") from None
    file.seek(0)
    return columns


def _parser_skips(caught: list[warnings.WarningMessage]) -> list[BadRow]:
    """The lines pandas skipped (wrong number of fields), from its warnings."""
    skipped = []
    for warning in caught:
        for line, reason in re.findall(r"Skipping line (\d+): (.+)", str(warning.message)):
            skipped.append(BadRow(int(line), reason.strip()))
    return skipped


def _csv_chunks(file: IO[bytes], name: str, dtype: Any) -> Iterator[tuple]:
    """(frame, line number of each row, rows pandas skipped) per chunk of a CSV.

    Every column is read (no usecols): with usecols pandas silently accepts a row
    with too many fields instead of reporting it.
    """
    reader = pd.read_csv(
        file,
        dtype=dtype,
        chunksize=CHUNK_ROWS,
        skip_blank_lines=False,  # a blank line stays a (bad) row: line numbers hold
        keep_default_na=False,
        na_values=[""],
        true_values=["true", "True", "TRUE"],
        false_values=["false", "False", "FALSE"],
        on_bad_lines="warn",
    )
    rows_before, skipped_lines = 0, []
    while True:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                frame = next(reader)
            except StopIteration:
                return
            except (pd.errors.ParserError, UnicodeDecodeError) as exc:
                raise InputFormatError(f"{name}: {str(exc).strip()}") from None
        skipped = _parser_skips(caught)
        skipped_lines += [bad.line for bad in skipped]
        # Row r is on line r + 2 (the header is line 1), after the lines pandas skipped.
        lines = np.arange(rows_before, rows_before + len(frame)) + 2
        for line in sorted(skipped_lines):
            lines[lines >= line] += 1
        rows_before += len(frame)
        yield frame, lines, skipped


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
    # Default parsing is the fastest: a column of 0/1 arrives as integers, of
    # true/false as booleans; only a mixed or broken column arrives as text.
    text = pd.ArrowDtype(pa.string())  # as written: an id "007" stays "007"
    dtypes = {id_column: text} | ({CITY_COLUMN: text} if CITY_COLUMN in columns else {})
    for frame, lines, skipped in _csv_chunks(file, name, dtypes):
        values = np.empty((len(frame), len(INTEREST_KEYS)), order="F")  # filled by column
        for j, key in enumerate(INTEREST_KEYS):
            values[:, j] = truth_values(frame[key])
        # One Arrow array, whether pandas holds the column in one chunk or several.
        ids = pa.chunked_array(pa.array(frame[id_column].array)).combine_chunks()
        bad = np.isnan(values).any(axis=1) | frame[id_column].isna().to_numpy()
        cities = None
        if CITY_COLUMN in frame:
            cities = [None if pd.isna(c) else c for c in frame[CITY_COLUMN].tolist()]
            bad |= np.array([c is not None and city_problem(c) is not None for c in cities])
            cities = [None if c is None else display_city(c) for c in cities]
        if not bad.any():
            yield Chunk(ids, values, list(skipped), file.tell(), cities)
            continue
        bad_rows = [*skipped, *(_describe_bad_row(frame.iloc[i], lines[i], id_column)
                                for i in np.flatnonzero(bad))]  # fmt: skip
        if cities is not None:
            cities = [city for city, is_bad in zip(cities, bad, strict=True) if not is_bad]
        yield Chunk(ids.filter(pa.array(~bad)), values[~bad], bad_rows, file.tell(), cities)


def truth_values(column: pd.Series) -> np.ndarray:
    """A column as 0.0/1.0, NaN where it holds anything but 0, 1, true or false."""
    if pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype=np.float64)
    if pd.api.types.is_integer_dtype(column):
        integers = column.to_numpy()
        values = integers.astype(np.float64)
        if (integers & ~1).any():  # anything but 0 and 1
            values[(integers != 0) & (integers != 1)] = np.nan
        return values
    if pd.api.types.is_float_dtype(column):  # empty cells (NaN) or decimals
        values = column.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        values[(values != 0) & (values != 1)] = np.nan
        return values
    text = column.astype(object).map(lambda cell: TRUTH.get(str(cell).strip().lower()))
    return text.to_numpy(dtype=np.float64, na_value=np.nan)


def _describe_bad_row(row: pd.Series, line: int, id_column: str) -> BadRow:
    if row.isna().all():
        return BadRow(int(line), "empty line")
    problems = [f"{id_column} is empty"] if pd.isna(row[id_column]) else []
    city = row.get(CITY_COLUMN)
    if city is not None and not pd.isna(city) and (problem := city_problem(city)):
        problems.append(f"{CITY_COLUMN} {problem}")
    for key in INTEREST_KEYS:
        cell = row[key]
        if pd.isna(cell):
            problems.append(f"{key} is empty")
        elif np.isnan(truth_values(pd.Series([cell]))[0]):
            problems.append(f"{key} is {cell!r}, not 0, 1, true or false")
    return BadRow(int(line), "; ".join(problems))


def read_survey_csv(file: IO[bytes], name: str) -> Iterator[Chunk]:
    """Chunks of the survey export; a user's id is their row number (1 = first answer)."""
    for frame, lines, skipped in _csv_chunks(file, name, str):
        ids, rows, bad_rows = [], [], list(skipped)
        for line, row in zip(lines, frame.itertuples(index=False), strict=True):
            if all(pd.isna(cell) for cell in row):
                bad_rows.append(BadRow(int(line), "empty line"))
                continue
            cells = [cell for cell in row[1:] if isinstance(cell, str)]  # after the timestamp
            try:
                rows.append(parse_answer_cells(cells, f"line {line}"))
                ids.append(int(line) - 1)
            except SurveyFormatError as exc:
                bad_rows.append(BadRow(int(line), str(exc).split(": ", 1)[1]))
        features = np.array(rows).reshape(len(rows), len(INTEREST_KEYS))
        # Numbers, so that CSV and JSON Lines results write them alike (unquoted).
        yield Chunk(pa.array(ids, pa.int64()), features, bad_rows, file.tell())


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


class ResultWriter:
    """Writes id, cluster and scores: CSV (by pyarrow) or JSON Lines (by suffix)."""

    def __init__(self, file: IO[bytes], jsonl: bool, model: SegmentModel):
        self.file, self.jsonl, self.model = file, jsonl, model
        self._csv: pa_csv.CSVWriter | None = None
        # pyarrow formats and writes a CSV without holding the GIL: each chunk is
        # written by this thread, on the second core, while the next one is read and
        # scored (a million rows: 1.9 -> 1.6 s, docs/performance.md).
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="write-csv")
        self._writing: Future[None] | None = None

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
                "cluster": pa.array(segments, pa.int32()),
                **{
                    f"score_{self.model.score_keys[j]}": pa.array(scores[:, j])
                    for j in self.model.number_order
                },
            }
        )
        if self._csv is None:
            options = pa_csv.WriteOptions(quoting_style="needed")
            self._csv = pa_csv.CSVWriter(self.file, table.schema, write_options=options)
        self._wait()
        self._writing = self._thread.submit(self._csv.write_table, table)

    def _wait(self) -> None:
        """Until the chunk being written is; its error, if it failed, raised here."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def close(self) -> None:
        """Write what is left; on error, stop writing (the output is thrown away)."""
        try:
            self._wait()
            if self._csv is not None:
                self._csv.close()
        finally:
            self._thread.shutdown(cancel_futures=True)


@dataclass
class AssignSummary:
    assigned: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)


class BadRowsError(ValueError):
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
    with input_path.open("rb") as source, partial.open("wb") as sink:
        if input_format == "csv":
            chunks = read_interest_csv(source, input_path.name, id_column)
        elif input_format == "survey":
            chunks = read_survey_csv(source, input_path.name)
        else:
            chunks = read_jsonl(source, input_path.name)
        writer = ResultWriter(sink, jsonl_output, model)
        try:
            for chunk in chunks:
                if chunk.bad_rows and not skip_bad_rows:
                    raise BadRowsError(input_path.name, min(chunk.bad_rows, key=_by_line))
                summary.bad_rows += chunk.bad_rows
                segments, scores = model.assign_users(chunk.features)
                writer.write(chunk.ids, segments, scores)
                if store is not None:
                    store.save(_records(chunk, segments, scores, model))
                summary.assigned += len(chunk.ids)
                on_progress(chunk.bytes_read)
            writer.close()
        except BaseException:
            with suppress(Exception):
                writer.close()  # before the file closes under its thread
            sink.close()
            partial.unlink()
            raise
    partial.replace(output_path)
    summary.bad_rows.sort(key=_by_line)
    return summary


def _by_line(bad_row: BadRow) -> int:
    return bad_row.line


def _python_ids(ids: pa.Array | list[Any]) -> list[Any]:
    return ids.to_pylist() if isinstance(ids, pa.Array) else ids


def _records(
    chunk: Chunk, segments: np.ndarray, scores: np.ndarray, model: SegmentModel
) -> list["Assignment"]:
    from ..store.users import Assignment, chosen_interests

    return [
        Assignment(
            user_id=user_id,
            interests=chosen_interests(features),
            cluster=int(segment),
            scores=model.scores_by_number(user_scores),
            model_version=model.version,
            source="assign",
            city=city,
        )
        for user_id, features, segment, user_scores, city in zip(
            _python_ids(chunk.ids),
            chunk.features,
            segments.tolist(),
            scores.tolist(),
            chunk.cities or [None] * len(chunk.features),
            strict=True,
        )
    ]
