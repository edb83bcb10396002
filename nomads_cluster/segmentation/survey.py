"""Reading the survey export (Google Forms CSV) into the 0/1 interest matrix."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ServiceError
from .interests import INTEREST_INDEX, INTEREST_KEYS, label_to_key


class SurveyFormatError(ServiceError, ValueError):
    """The survey file cannot be read as interests; the message names the row and the label."""


@dataclass(frozen=True)
class Survey:
    features: np.ndarray  # (n_answers, 26) of 0.0/1.0, columns in INTEREST_KEYS order
    sha256: str  # of the file's bytes, or of the stored answers' hashes
    source: str  # the file's name, or where in the database the answers come from

    @property
    def n_rows(self) -> int:
        return self.features.shape[0]


def parse_answer_cells(cells: list[str], where: str) -> np.ndarray:
    """The 0/1 vector of one answer: each cell lists the chosen options, comma separated."""
    vector = np.zeros(len(INTEREST_KEYS))
    for cell in cells:
        for label in cell.split(","):
            if not label.strip():  # an empty cell: nothing chosen in that question
                continue
            key = label_to_key(label)
            if key is None:
                raise SurveyFormatError(f"{where}: unknown option {label.strip()!r}")
            vector[INTEREST_INDEX[key]] = 1.0
    return vector


@dataclass(frozen=True)
class SurveyAnswer:
    answered_at: str  # the export's timestamp, as written
    features: np.ndarray
    sha256: str  # of the row's cells: the same answer in a later export has the same


def read_survey_answers(path: Path) -> list[SurveyAnswer]:
    """Each answer of the survey CSV: a timestamp column, then the multi-select questions."""
    import pandas as pd  # here only: `assign` parses answers without pandas (cli/offline.py)

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if frame.shape[1] < 2:
        raise SurveyFormatError(f"{path}: expected a timestamp column and answer columns")
    return [
        SurveyAnswer(
            answered_at=cells[0],
            # Data row i is on line i + 2: the header is line 1 (no answer spans lines).
            features=parse_answer_cells(cells[1:], f"{path.name}, row {i + 1} (line {i + 2})"),
            sha256=hashlib.sha256("\x1f".join(cells).encode()).hexdigest(),
        )
        for i, cells in enumerate(frame.itertuples(index=False, name=None))
    ]


def read_survey(path: str | Path) -> Survey:
    """The survey CSV as the 0/1 matrix to train on."""
    path = Path(path)
    answers = read_survey_answers(path)
    features = np.array([answer.features for answer in answers])
    return Survey(
        features=features.reshape(len(answers), len(INTEREST_KEYS)),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        source=path.name,
    )
