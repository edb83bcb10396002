"""Similar users from interest sets: an index that gives the first users (by number) of
an interest set, of a city or all, so that a process keeps only the distinct sets, not
every user. store_state.erasures goes: no set needs reloading after an erasure.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEX = "ix_assignments_interest_mask_user_no"
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_index(INDEX, "assignments", ["interest_mask", "user_no", "city_key"])
    with op.batch_alter_table("store_state") as batch:
        batch.drop_column("erasures")


def downgrade() -> None:
    with op.batch_alter_table("store_state") as batch:
        batch.add_column(sa.Column("erasures", BIG_ID, nullable=False, server_default="0"))
    op.drop_index(INDEX, table_name="assignments")
