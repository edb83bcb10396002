"""The ``nomads-cluster`` command line.

Commands that use the model or the store build the app with ``create_app()``: the
same NOMADS_* (and DATABASE_URL) settings as the service.
"""

import click

from . import data, model


@click.group()
def main() -> None:
    """nomads-cluster: segment the DigitalAndNomads users by interests."""


for command in (model.train, model.import_model, model.churn, model.promote, model.heatmap,
                data.ingest, data.assign, data.reassign, data.db):  # fmt: skip
    main.add_command(command)
