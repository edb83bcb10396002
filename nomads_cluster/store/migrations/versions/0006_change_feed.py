"""The change feed: user_events (the transactional outbox of every placement, move and
erasure), the webhook worker's delivery state per receiver, and the last event id
pruned.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _at(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("store_state") as batch:
        batch.add_column(
            sa.Column("events_pruned_through", BIG_ID, nullable=False, server_default="0")
        )
    op.create_table(
        "user_events",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=256), nullable=False),
        sa.Column("segment", sa.Integer(), nullable=True),
        sa.Column("room", sa.String(length=255), nullable=True),
        sa.Column("previous_segment", sa.Integer(), nullable=True),
        sa.Column("previous_room", sa.String(length=255), nullable=True),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        _at("occurred_at", nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("url", sa.String(length=2048), primary_key=True),
        sa.Column("delivered_through", BIG_ID, nullable=False),
        sa.Column("sending_through", BIG_ID, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _at("next_attempt_at"),
        _at("failing_since"),
        _at("stopped_at"),
        sa.Column("stopped_reason", sa.Text(), nullable=True),
        sa.Column("delivered_events", BIG_ID, nullable=False),
        sa.Column("failed_attempts", BIG_ID, nullable=False),
        sa.Column("leased_by", sa.String(length=255), nullable=True),
        _at("leased_until"),
    )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("user_events")
    with op.batch_alter_table("store_state") as batch:
        batch.drop_column("events_pruned_through")
