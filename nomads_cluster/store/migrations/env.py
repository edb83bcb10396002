"""Alembic's entry point: runs on the connection that alembic_config() was given."""

from alembic import context

from nomads_cluster.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
