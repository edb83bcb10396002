"""The store: current assignments, their history, survey responses.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# 64-bit keys on PostgreSQL; SQLite's rowid alias must be declared INTEGER.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def assignment_columns() -> list[sa.Column]:
    return [
        sa.Column("id_is_int", sa.Boolean(), nullable=False),
        sa.Column("interests", sa.JSON(), nullable=False),
        sa.Column("cluster", sa.Integer(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "assignments",
        sa.Column("user_id", sa.String(length=256), nullable=False),
        *assignment_columns(),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_table(
        "assignment_history",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("user_id", sa.String(length=256), nullable=False),
        *assignment_columns(),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_assignment_history_user_id_id", "assignment_history", ["user_id", "id"])
    op.create_table(
        "survey_responses",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("answer_sha256", sa.String(length=64), nullable=False),
        sa.Column("answered_at", sa.String(length=64), nullable=False),
        sa.Column("interests", sa.JSON(), nullable=False),
        sa.Column("source_file", sa.String(length=255), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("answer_sha256"),
    )


def downgrade() -> None:
    op.drop_table("survey_responses")
    op.drop_index("ix_assignment_history_user_id_id", table_name="assignment_history")
    op.drop_table("assignment_history")
    op.drop_table("assignments")
