"""Each room counts its members, kept by the database itself: triggers on the
assignments add and take away one as a user's room_id changes, whatever the write
(a placement, a body without a city, a reassign, an erasure). Joining a room then reads
a few rooms instead of counting every member of a city's segment.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JOINS = "UPDATE rooms SET members = members + 1 WHERE id = NEW.room_id"
LEAVES = "UPDATE rooms SET members = members - 1 WHERE id = OLD.room_id"
# (event, condition, statements): an UPDATE of an assignment that keeps its room
# changes nothing; one that moves it is a leave and a join.
TRIGGERS = {
    "assignments_join_room": ("INSERT", "NEW.room_id IS NOT NULL", [JOINS]),
    "assignments_leave_room": ("DELETE", "OLD.room_id IS NOT NULL", [LEAVES]),
    "assignments_move_room": (
        "UPDATE OF room_id",
        "OLD.room_id IS DISTINCT FROM NEW.room_id",
        [LEAVES, JOINS],
    ),
}


def _create_trigger(name: str, event: str, condition: str, statements: list[str]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        # NULL ids match no room: the UPDATE of a move to or from no room is a no-op.
        body = "; ".join(statements)
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN {body}; RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON assignments FOR EACH ROW"
            f" WHEN ({condition}) EXECUTE FUNCTION {name}()"
        )
    else:
        sqlite_condition = condition.replace("IS DISTINCT FROM", "IS NOT")
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON assignments FOR EACH ROW"
            f" WHEN {sqlite_condition} BEGIN {'; '.join(statements)}; END"
        )


def upgrade() -> None:
    with op.batch_alter_table("rooms") as batch:
        batch.add_column(sa.Column("members", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE rooms SET members ="
        " (SELECT count(*) FROM assignments WHERE assignments.room_id = rooms.id)"
    )
    for name, (event, condition, statements) in TRIGGERS.items():
        _create_trigger(name, event, condition, statements)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER {name}" + (" ON assignments" if postgresql else ""))
        if postgresql:
            op.execute(f"DROP FUNCTION {name}()")
    with op.batch_alter_table("rooms") as batch:
        batch.drop_column("members")
