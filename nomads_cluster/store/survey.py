"""The survey's answers kept in the database, for training on every answer collected
(``nomads-cluster ingest``, then ``train --from-db``)."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from ..segmentation.interests import INTEREST_KEYS, encode_interests
from .database import Database
from .tables import survey_responses


class SurveyAnswers:
    def __init__(self, database: Database):
        self.database = database

    def add(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert survey answers, skipping those already stored; the number inserted."""
        if not rows:
            return 0
        insert = self.database.insert(survey_responses).on_conflict_do_nothing(
            index_elements=[survey_responses.c.answer_sha256]
        )
        count = sa.select(sa.func.count()).select_from(survey_responses)

        def work(conn: sa.Connection) -> int:
            before = conn.execute(count).scalar_one()
            conn.execute(insert, list(rows))
            return conn.execute(count).scalar_one() - before

        return self.database.run(work, write=True)

    def features(self) -> tuple[np.ndarray, list[str]]:
        """Every stored survey answer as a 0/1 matrix (in ingestion order), with the
        answers' hashes in the same order."""
        query = sa.select(survey_responses.c.interests, survey_responses.c.answer_sha256)
        rows = self.database.run(
            lambda conn: conn.execute(query.order_by(survey_responses.c.id)).all(), write=False
        )
        features = np.array(
            [encode_interests(dict.fromkeys(row.interests, True)) for row in rows]
        ).reshape(len(rows), len(INTEREST_KEYS))
        return features, [row.answer_sha256 for row in rows]
