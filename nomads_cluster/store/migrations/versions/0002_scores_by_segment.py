"""Scores keyed by segment number ({"1": 0.4, ...}) instead of a list in component order.

Segment numbers now come from the model's card and survive retraining, so a list's
positions would no longer say which segment each score belongs to. Rows written
before are by models numbered 1..n in component order: position i is segment i + 1.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BATCH_ROWS = 5000


def _rekey(table_name: str, key: str, to_dict: bool) -> None:
    table = sa.table(table_name, sa.column(key), sa.column("scores", sa.JSON))
    connection = op.get_bind()
    last = None
    while True:
        query = sa.select(table.c[key], table.c.scores).order_by(table.c[key]).limit(BATCH_ROWS)
        if last is not None:
            query = query.where(table.c[key] > last)
        rows = connection.execute(query).all()
        if not rows:
            return
        for row_key, scores in rows:
            if to_dict and isinstance(scores, list):
                new = {str(i + 1): score for i, score in enumerate(scores)}
            elif not to_dict and isinstance(scores, dict):
                new = [scores[k] for k in sorted(scores, key=int)]
            else:
                continue
            connection.execute(table.update().where(table.c[key] == row_key).values(scores=new))
        last = rows[-1][0]


def upgrade() -> None:
    _rekey("assignments", "user_id", to_dict=True)
    _rekey("assignment_history", "id", to_dict=True)


def downgrade() -> None:
    _rekey("assignments", "user_id", to_dict=False)
    _rekey("assignment_history", "id", to_dict=False)
