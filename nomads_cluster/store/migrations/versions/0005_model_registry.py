"""The model registry in the database: the versions filed, which one the fleet serves,
candidates shadowed on live traffic and their agreement, churn measured. A filed
version cannot be altered: a trigger refuses any UPDATE of model_versions.

The first version is filed by ``nomads-cluster db upgrade`` (and by a server starting
on an empty registry), from the committed model/, not here: a migration reads no file.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
IMMUTABLE = "model_versions_immutable"
REFUSAL = "a filed model version cannot be altered: file a new one"


def _version(name: str = "version", *items: sa.ForeignKey, **kwargs) -> sa.Column:
    return sa.Column(name, sa.String(length=12), *items, **kwargs)


def _at(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "model_versions",
        _version(primary_key=True),
        sa.Column("card", sa.JSON(), nullable=False),
        sa.Column("profiles", sa.JSON(), nullable=False),
        sa.Column("parameters_sha256", sa.String(length=64), nullable=False),
        sa.Column("heatmap", sa.LargeBinary(), nullable=True),
        sa.Column("filed_by", sa.String(length=255), nullable=False),
        _at("filed_at"),
    )
    op.create_table(
        "model_promotions",
        sa.Column("id", BIG_ID, primary_key=True),
        _version("version", sa.ForeignKey("model_versions.version"), nullable=False),
        _version("previous", nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("promoted_by", sa.String(length=255), nullable=False),
        _at("promoted_at"),
    )
    op.create_table(
        "model_shadows",
        _version("version", sa.ForeignKey("model_versions.version"), primary_key=True),
        _at("started_at"),
        _at("stopped_at", nullable=True),
    )
    op.create_table(
        "shadow_agreement",
        _version("shadow_version", primary_key=True),
        _version("served_version", primary_key=True),
        sa.Column("served_segment", sa.Integer(), primary_key=True),
        sa.Column("shadow_segment", sa.Integer(), primary_key=True),
        sa.Column("requests", BIG_ID, nullable=False),
    )
    op.create_table(
        "model_churn",
        _version("version", sa.ForeignKey("model_versions.version"), primary_key=True),
        _version("measured_against", nullable=False),
        sa.Column("users", BIG_ID, nullable=False),
        sa.Column("changed", BIG_ID, nullable=False),
        sa.Column("moves", sa.JSON(), nullable=False),
        _at("measured_at"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE FUNCTION {IMMUTABLE}() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN RAISE EXCEPTION '{REFUSAL}'; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {IMMUTABLE} BEFORE UPDATE ON model_versions"
            f" FOR EACH ROW EXECUTE FUNCTION {IMMUTABLE}()"
        )
    else:
        op.execute(
            f"CREATE TRIGGER {IMMUTABLE} BEFORE UPDATE ON model_versions"
            f" BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER {IMMUTABLE} ON model_versions")
        op.execute(f"DROP FUNCTION {IMMUTABLE}()")
    else:
        op.execute(f"DROP TRIGGER {IMMUTABLE}")
    for table in ("model_churn", "shadow_agreement", "model_shadows", "model_promotions"):
        op.drop_table(table)
    op.drop_table("model_versions")
