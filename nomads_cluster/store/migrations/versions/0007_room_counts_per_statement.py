"""On PostgreSQL, the rooms' member counts kept once per statement rather than once per
row: each write's rows are counted by room (its transition tables) and every room it
changes is updated once. A bulk load of thousands of users of one city then updates
that city's few rooms once, not once per user. SQLite keeps migration 0004's row
triggers: it has no statement triggers, and its writers take turns anyway.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ROW_TRIGGERS = ("assignments_join_room", "assignments_leave_room", "assignments_move_room")
# Each trigger: (event, its transition tables, the rows counted: (table, sign), ...).
STATEMENT_TRIGGERS = {
    "assignments_join_rooms": ("INSERT", "NEW TABLE AS joined", (("joined", "1"),)),
    "assignments_leave_rooms": ("DELETE", "OLD TABLE AS left_rows", (("left_rows", "-1"),)),
    "assignments_move_rooms": (
        "UPDATE",
        "OLD TABLE AS left_rows NEW TABLE AS joined",
        (("left_rows", "-1"), ("joined", "1")),
    ),
}


def _count_update(counted: tuple[tuple[str, str], ...]) -> str:
    """One UPDATE of every room whose count the statement's rows change."""
    rows = " UNION ALL ".join(
        f"SELECT room_id, {sign} AS change FROM {table} WHERE room_id IS NOT NULL"
        for table, sign in counted
    )
    return (
        "UPDATE rooms SET members = rooms.members + changed.change"
        f" FROM (SELECT room_id, sum(change) AS change FROM ({rows}) AS rows"
        " GROUP BY room_id HAVING sum(change) <> 0) AS changed"
        " WHERE rooms.id = changed.room_id"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in ROW_TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON assignments")
        op.execute(f"DROP FUNCTION {name}()")
    for name, (event, tables, counted) in STATEMENT_TRIGGERS.items():
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN {_count_update(counted)}; RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON assignments REFERENCING {tables}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in STATEMENT_TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON assignments")
        op.execute(f"DROP FUNCTION {name}()")
    joins = "UPDATE rooms SET members = members + 1 WHERE id = NEW.room_id"
    leaves = "UPDATE rooms SET members = members - 1 WHERE id = OLD.room_id"
    row_triggers = {
        "assignments_join_room": ("INSERT", "NEW.room_id IS NOT NULL", joins),
        "assignments_leave_room": ("DELETE", "OLD.room_id IS NOT NULL", leaves),
        "assignments_move_room": (
            "UPDATE OF room_id",
            "OLD.room_id IS DISTINCT FROM NEW.room_id",
            f"{leaves}; {joins}",
        ),
    }
    for name, (event, condition, body) in row_triggers.items():
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN {body}; RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON assignments FOR EACH ROW"
            f" WHEN ({condition}) EXECUTE FUNCTION {name}()"
        )
