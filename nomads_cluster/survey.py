"""Reading the survey export (Google Forms CSV) into the 0/1 interest matrix."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .interests import INTEREST_INDEX, INTEREST_KEYS, label_to_key


class SurveyFormatError(ValueError):
    """The survey file cannot be read as interests; the message names the row and the label."""


@dataclass(frozen=True)
class Survey:
    features: np.ndarray  # (n_answers, 26) of 0.0/1.0, columns in INTEREST_KEYS order
    sha256: str  # of the file's bytes
    path: Path

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


def read_survey(path: str | Path) -> Survey:
    """Read the survey CSV: a timestamp column followed by the four multi-select questions."""
    path = Path(path)
    raw = path.read_bytes()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if frame.shape[1] < 2:
        raise SurveyFormatError(f"{path}: expected a timestamp column and answer columns")
    answers = frame.iloc[:, 1:]
    rows = [
        # Data row i is on line i + 2: the header is line 1 (no answer spans lines).
        parse_answer_cells(list(values), f"{path.name}, row {i + 1} (line {i + 2})")
        for i, values in enumerate(answers.itertuples(index=False, name=None))
    ]
    features = np.vstack(rows) if rows else np.zeros((0, len(INTEREST_KEYS)))
    return Survey(features=features, sha256=hashlib.sha256(raw).hexdigest(), path=path)
