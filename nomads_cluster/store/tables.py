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
        sa.Column("city", sa.String(100)),  # as the user wrote it (cities.display_city)
        sa.Column("room_id", sa.String(255)),  # their chat room, when they gave a city
    ]


BIG_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


# The current assignment of each user; the user id is the _id as text.
assignments = sa.Table(
    "assignments",
    metadata,
    sa.Column("user_id", sa.String(256), primary_key=True),
    *_assignment_columns(),
    sa.Column("city_key", sa.String(200)),  # cities.city_key: one city, one key
    sa.Column("interest_mask", sa.Integer, nullable=False),  # interests.interest_mask
    # The similar-users index (store/neighbours.py): a number per user, kept while the
    # user is stored (ties are broken by it), and the order of the changes: each write
    # gives its rows the next numbers, in commit order.
    sa.Column("user_no", BIG_ID, nullable=False),
    sa.Column("seq", BIG_ID, nullable=False),
    sa.UniqueConstraint("user_no", name="uq_assignments_user_no"),
    sa.UniqueConstraint("seq", name="uq_assignments_seq"),
    sa.Index("ix_assignments_room_id_user_id", "room_id", "user_id"),
    # The first users of an interest set, of a city or all (neighbours.py).
    sa.Index("ix_assignments_interest_mask_user_no", "interest_mask", "user_no", "city_key"),
)
# Every assignment ever made, the current ones included.
assignment_history = sa.Table(
    "assignment_history",
    metadata,
    sa.Column("id", BIG_ID, primary_key=True),
    sa.Column("user_id", sa.String(256), nullable=False),
    *_assignment_columns(),
    sa.Index("ix_assignment_history_user_id_id", "user_id", "id"),
)
# Chat rooms: the users of one city and segment, NOMADS_ROOM_SIZE at most per room.
# Members are the assignments whose room_id is the room's; a room, once opened, stays.
# Their count is kept by triggers on the assignments (migration 0004).
rooms = sa.Table(
    "rooms",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),  # cities.room_id
    sa.Column("city_key", sa.String(200), nullable=False),
    sa.Column("city", sa.String(100), nullable=False),  # as its first member wrote it
    sa.Column("segment", sa.Integer, nullable=False),
    sa.Column("ordinal", sa.Integer, nullable=False),  # 1, 2, ... per city and segment
    sa.Column("members", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint("city_key", "segment", "ordinal"),
)
# One row: the last event id pruned from the feed (a cursor before it is too old).
store_state = sa.Table(
    "store_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("events_pruned_through", BIG_ID, nullable=False, server_default="0"),
)
# PostgreSQL's numbers of assignments.user_no and seq (SQLite counts under its lock).
USER_NO_SEQUENCE = sa.Sequence("assignment_user_no_seq", metadata=metadata)
SEQ_SEQUENCE = sa.Sequence("assignment_seq", metadata=metadata)

# Survey answers collected for training; answer_sha256 identifies a row of an export.
survey_responses = sa.Table(
    "survey_responses",
    metadata,
    sa.Column("id", BIG_ID, primary_key=True),
    sa.Column("answer_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("answered_at", sa.String(64), nullable=False),  # the export's timestamp
    sa.Column("interests", sa.JSON, nullable=False),
    sa.Column("source_file", sa.String(255), nullable=False),
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
)

# The model registry (store/registry.py): every version filed, which the whole fleet
# reads. A filed version is never altered (migration 0005's trigger refuses it): its
# card and its segments' profiles as numbers, checked against parameters_sha256.
VERSION = sa.String(12)
model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("version", VERSION, primary_key=True),
    sa.Column("card", sa.JSON, nullable=False),  # model.json
    sa.Column("profiles", sa.JSON, nullable=False),  # components or centroids, as numbers
    sa.Column("parameters_sha256", sa.String(64), nullable=False),  # of card and profiles
    sa.Column("heatmap", sa.LargeBinary),  # heatmap.png, if drawn
    sa.Column("filed_by", sa.String(255), nullable=False),
    sa.Column("filed_at", sa.DateTime(timezone=True), nullable=False),
)
# Which version the fleet serves: the newest row. ``previous`` is what a rollback from
# that row serves again.
model_promotions = sa.Table(
    "model_promotions",
    metadata,
    sa.Column("id", BIG_ID, primary_key=True),
    sa.Column("version", VERSION, sa.ForeignKey("model_versions.version"), nullable=False),
    sa.Column("previous", VERSION),
    sa.Column("action", sa.String(16), nullable=False),  # first, promote, rollback
    sa.Column("promoted_by", sa.String(255), nullable=False),
    sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=False),
)
# Candidates scored beside the served model on live traffic: the one whose stopped_at
# is null is shadowed now.
model_shadows = sa.Table(
    "model_shadows",
    metadata,
    sa.Column("version", VERSION, sa.ForeignKey("model_versions.version"), primary_key=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("stopped_at", sa.DateTime(timezone=True)),
)
# What a shadowed candidate answered beside the served model, summed over the fleet:
# requests per (served segment, candidate segment).
shadow_agreement = sa.Table(
    "shadow_agreement",
    metadata,
    sa.Column("shadow_version", VERSION, primary_key=True),
    sa.Column("served_version", VERSION, primary_key=True),
    sa.Column("served_segment", sa.Integer, primary_key=True),
    sa.Column("shadow_segment", sa.Integer, primary_key=True),
    sa.Column("requests", BIG_ID, nullable=False),
)
# The latest churn measured of a version: how many stored users it would move.
model_churn = sa.Table(
    "model_churn",
    metadata,
    sa.Column("version", VERSION, sa.ForeignKey("model_versions.version"), primary_key=True),
    sa.Column("measured_against", VERSION, nullable=False),
    sa.Column("users", BIG_ID, nullable=False),
    sa.Column("changed", BIG_ID, nullable=False),
    sa.Column("moves", sa.JSON, nullable=False),  # [{"from", "to", "users"}]
    sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
)

# The change feed (store/events.py): an event per change of a user's segment or room,
# written in the change's transaction; ids in commit order. No interests.
user_events = sa.Table(
    "user_events",
    metadata,
    sa.Column("id", BIG_ID, primary_key=True),
    sa.Column("type", sa.String(16), nullable=False),  # user.placed, user.moved, user.erased
    sa.Column("user_id", sa.String(256), nullable=False),
    sa.Column("segment", sa.Integer),  # null once erased
    sa.Column("room", sa.String(255)),
    sa.Column("previous_segment", sa.Integer),
    sa.Column("previous_room", sa.String(255)),
    sa.Column("model_version", sa.String(64)),
    sa.Column("source", sa.String(16), nullable=False),  # api, batch, assign, reassign, erasure
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
)
# Where the webhook worker stands with each receiver (the URL it was configured with).
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("url", sa.String(2048), primary_key=True),
    sa.Column("delivered_through", BIG_ID, nullable=False),  # every event up to it received
    sa.Column("sending_through", BIG_ID),  # the batch being tried, resent as it was
    sa.Column("attempts", sa.Integer, nullable=False),  # failed tries of that batch
    sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("failing_since", sa.DateTime(timezone=True)),
    sa.Column("stopped_at", sa.DateTime(timezone=True)),  # 410 Gone, or failing too long
    sa.Column("stopped_reason", sa.Text),
    sa.Column("delivered_events", BIG_ID, nullable=False),  # counts, for the metrics
    sa.Column("failed_attempts", BIG_ID, nullable=False),
    sa.Column("leased_by", sa.String(255)),  # the worker delivering now
    sa.Column("leased_until", sa.DateTime(timezone=True)),
)
