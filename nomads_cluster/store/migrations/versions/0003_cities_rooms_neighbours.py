"""Cities and chat rooms; each user's interests as one integer, a stable number and the
order of the changes, for the similar-users index.

Existing users get their mask from their interests, and numbers in the order of
their user ids; they have no city, hence no room.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from nomads_cluster.segmentation.interests import interest_mask

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
BATCH_ROWS = 5000
SEQUENCES = ("assignment_user_no_seq", "assignment_seq")


def _number_users(connection: sa.Connection) -> int:
    """Fill interest_mask, user_no and seq of the existing users; how many there are."""
    table = sa.table(
        "assignments",
        sa.column("user_id"),
        sa.column("interests", sa.JSON),
        sa.column("interest_mask"),
        sa.column("user_no"),
        sa.column("seq"),
    )
    numbered, last = 0, None
    while True:
        query = sa.select(table.c.user_id, table.c.interests).order_by(table.c.user_id)
        if last is not None:
            query = query.where(table.c.user_id > last)
        rows = connection.execute(query.limit(BATCH_ROWS)).all()
        if not rows:
            return numbered
        for user_id, interests in rows:
            numbered += 1
            connection.execute(
                table.update()
                .where(table.c.user_id == user_id)
                .values(interest_mask=interest_mask(interests), user_no=numbered, seq=numbered)
            )
        last = rows[-1][0]


def upgrade() -> None:
    for table in ("assignments", "assignment_history"):
        op.add_column(table, sa.Column("city", sa.String(length=100), nullable=True))
        op.add_column(table, sa.Column("room_id", sa.String(length=255), nullable=True))
    op.add_column("assignments", sa.Column("city_key", sa.String(length=200), nullable=True))
    for name in ("interest_mask", "user_no", "seq"):
        column_type = sa.Integer() if name == "interest_mask" else BIG_ID
        op.add_column("assignments", sa.Column(name, column_type, nullable=True))
    connection = op.get_bind()
    users = _number_users(connection)
    with op.batch_alter_table("assignments") as batch:
        for name in ("interest_mask", "user_no", "seq"):
            batch.alter_column(name, nullable=False)
        batch.create_unique_constraint("uq_assignments_user_no", ["user_no"])
        batch.create_unique_constraint("uq_assignments_seq", ["seq"])
    op.create_index("ix_assignments_room_id_user_id", "assignments", ["room_id", "user_id"])
    op.create_table(
        "rooms",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("city_key", sa.String(length=200), nullable=False),
        sa.Column("city", sa.String(length=100), nullable=False),
        sa.Column("segment", sa.Integer(), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("city_key", "segment", "ordinal"),
    )
    op.create_table(
        "store_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("erasures", BIG_ID, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO store_state (id, erasures) VALUES (1, 0)")
    if connection.dialect.name == "postgresql":
        for sequence in SEQUENCES:
            op.execute(sa.schema.CreateSequence(sa.Sequence(sequence, start=users + 1)))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for sequence in SEQUENCES:
            op.execute(sa.schema.DropSequence(sa.Sequence(sequence)))
    op.drop_table("store_state")
    op.drop_table("rooms")
    op.drop_index("ix_assignments_room_id_user_id", table_name="assignments")
    with op.batch_alter_table("assignments") as batch:
        batch.drop_constraint("uq_assignments_seq", type_="unique")
        batch.drop_constraint("uq_assignments_user_no", type_="unique")
        for name in ("seq", "user_no", "interest_mask", "city_key", "room_id", "city"):
            batch.drop_column(name)
    with op.batch_alter_table("assignment_history") as batch:
        batch.drop_column("room_id")
        batch.drop_column("city")
