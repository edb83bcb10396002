"""The ``nomads-cluster`` command line.

Commands that use the store or the model registry read the same NOMADS_* (and
DATABASE_URL) settings as the service; none reads the working directory's model/
except ``db upgrade``, which files it in an empty registry. Run it as
``nomads-cluster ...`` or, where only the serving packages are installed (a Heroku
one-off dyno), as ``python -m nomads_cluster ...``.
"""

import click

from . import data, events, model
from .service import ServiceCommands


@click.group(cls=ServiceCommands)
def main() -> None:
    """nomads-cluster: segment the DigitalAndNomads users by interests."""


COMMANDS = [
    *(model.train, model.import_model, model.models, model.churn, model.shadow),
    *(model.promote, model.rollback, model.heatmap),
    *(data.ingest, data.assign, data.reassign, data.db),
    *(events.events, events.worker),
]
for command in COMMANDS:
    main.add_command(command)
