"""Room counts once per statement on PostgreSQL: the triggers of 0004 updated a room's
count once per member written, and a write of many users into few rooms (a chunk of a
bulk load, a group of the request path) updated the same room rows again and again,
each update one more row version for the next to find. Triggers per statement read
the statement's rows (its transition tables) and update each room once, by the
difference in its members. SQLite keeps 0004's triggers: it has no statement triggers,
and an update in place costs it little.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Iterable

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# 0004's triggers on PostgreSQL, which a downgrade brings back: (event, condition, body).
JOINS = "UPDATE rooms SET members = members + 1 WHERE id = NEW.room_id"
LEAVES = "UPDATE rooms SET members = members - 1 WHERE id = OLD.room_id"
ROW_TRIGGERS = {
    "assignments_join_room": ("INSERT", "NEW.room_id IS NOT NULL", JOINS),
    "assignments_leave_room": ("DELETE", "OLD.room_id IS NOT NULL", LEAVES),
    "assignments_move_room": (
        "UPDATE OF room_id",
        "OLD.room_id IS DISTINCT FROM NEW.room_id",
        f"{LEAVES}; {JOINS}",
    ),
}

# Each room's members after the statement minus before it, from its transition tables
# (an UPDATE trigger that names them cannot be limited to a column: an update that
# keeps every room nets nothing and updates no room).
JOINED = "SELECT room_id, 1 AS change FROM joined"
LEFT = "SELECT room_id, -1 AS change FROM left_rooms"
STATEMENT_TRIGGERS = {
    "assignments_count_joins": ("INSERT", "NEW TABLE AS joined", JOINED),
    "assignments_count_leaves": ("DELETE", "OLD TABLE AS left_rooms", LEFT),
    "assignments_count_moves": (
        "UPDATE",
        "OLD TABLE AS left_rooms NEW TABLE AS joined",
        f"{JOINED} UNION ALL {LEFT}",
    ),
}


def _count_members(changes: str) -> str:
    # The rooms are locked already, in the order of their ids, by the write that fires
    # it (store/writes.py): the order of this UPDATE cannot deadlock.
    return (
        "UPDATE rooms SET members = members + counted.change FROM"
        f" (SELECT room_id, sum(change) AS change FROM ({changes}) AS changes"
        " WHERE room_id IS NOT NULL GROUP BY room_id HAVING sum(change) <> 0) AS counted"
        " WHERE rooms.id = counted.room_id"
    )


def _create_trigger(name: str, body: str, fires: str) -> None:
    """A PL/pgSQL function that runs ``body``, and its trigger ``name``, AFTER ``fires``."""
    op.execute(
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS"
        f" $$ BEGIN {body}; RETURN NULL; END $$"
    )
    op.execute(f"CREATE TRIGGER {name} AFTER {fires} EXECUTE FUNCTION {name}()")


def _drop_triggers(names: Iterable[str]) -> None:
    for name in names:
        op.execute(f"DROP TRIGGER {name} ON assignments")
        op.execute(f"DROP FUNCTION {name}()")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _drop_triggers(ROW_TRIGGERS)
    for name, (event, tables, changes) in STATEMENT_TRIGGERS.items():
        fires = f"{event} ON assignments REFERENCING {tables} FOR EACH STATEMENT"
        _create_trigger(name, _count_members(changes), fires)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _drop_triggers(STATEMENT_TRIGGERS)
    for name, (event, condition, body) in ROW_TRIGGERS.items():
        _create_trigger(name, body, f"{event} ON assignments FOR EACH ROW WHEN ({condition})")
