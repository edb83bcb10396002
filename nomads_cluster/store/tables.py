"""The store's tables (SQLAlchemy Core). The schema itself is Alembic's
(``store/migrations``): a test checks that the migrated database equals these."""

import sqlalchemy as sa

metadata = sa.MetaData()


def _assignment_columns() -> list[sa.Column]:
    """What one assignment records (fresh Column objects: a Column joins one table)."""
    return [
        sa.Column("id_is_int", sa.Boolean, nullable=False),  # to echo the _id's JSON type
        sa.Column("interests", sa.JSON, nullable=False),  # the chosen interest keys
        sa.Column("cluster", sa.Integer, nullable=False),
        sa.Column("scores", sa.JSON, nullable=False),  # {"<segment>": score}
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),  # api, batch, assign
    ]


# The current assignment of each user; the user id is the _id as text.
assignments = sa.Table(
    "assignments",
    metadata,
    sa.Column("user_id", sa.String(256), primary_key=True),
    *_assignment_columns(),
)
# Every assignment ever made, the current ones included.
assignment_history = sa.Table(
    "assignment_history",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("user_id", sa.String(256), nullable=False),
    *_assignment_columns(),
    sa.Index("ix_assignment_history_user_id_id", "user_id", "id"),
)
# Survey answers collected for training; answer_sha256 identifies a row of an export.
survey_responses = sa.Table(
    "survey_responses",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("answer_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("answered_at", sa.String(64), nullable=False),  # the export's timestamp
    sa.Column("interests", sa.JSON, nullable=False),
    sa.Column("source_file", sa.String(255), nullable=False),
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
)
