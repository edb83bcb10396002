"""What the commands share: the service's database and model registry (the same
NOMADS_* and DATABASE_URL settings as the service), the one place where the service's
errors become the command's error line, the training packages they may lack, and
their wording of counts."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from ..errors import ServiceError

if TYPE_CHECKING:
    from flask import Flask

    from ..segmentation.model import SegmentModel
    from ..store.registry import ModelRegistry
    from ..store.users import UserStore


@contextmanager
def service_errors(after: str = "") -> Iterator[None]:
    """Around a command's work: a wrong setting, a model that cannot be served, a
    survey that cannot be read or a database out of reach (a ServiceError) ends the
    command with one line, and ``after``, what became of the work, not a traceback.
    Every command runs inside it (``ServiceCommands``); a command passes ``after``
    where work done before the failure stays done."""
    try:
        yield
    except ServiceError as exc:
        raise click.ClickException(f"{exc}{after}") from None


class ServiceCommands(click.Group):
    """The command group whose every command runs inside ``service_errors``."""

    def invoke(self, ctx: click.Context) -> object:
        with service_errors():
            return super().invoke(ctx)


@contextmanager
def settings() -> Iterator["Flask"]:
    """The service's settings, validated, in an app without extensions."""
    from .. import configured_app

    yield configured_app()


@contextmanager
def database() -> Iterator["UserStore"]:
    """The service's store (DATABASE_URL, default SQLite in the instance folder); its
    connections closed at the end."""
    from ..store.users import open_store

    with settings() as app:
        # A command is not a request: a chunk of a bulk load or a re-scoring batch may
        # run longer than a request's statement timeout allows.
        store = open_store(app.config, app.instance_path, for_commands=True)
    try:
        yield store
    finally:
        store.engine.dispose()


@contextmanager
def registry() -> Iterator["ModelRegistry"]:
    """The model registry in the service's database."""
    from ..store.registry import ModelRegistry

    with database() as store:
        yield ModelRegistry(store)


def served_model(models: "ModelRegistry", doing: str) -> "SegmentModel":
    """The version the fleet serves, loaded, and a line on stderr that says it is the
    one ``doing`` uses."""
    version = models.served()
    if version is None:
        raise click.ClickException(
            "the registry serves no model yet: run `nomads-cluster db upgrade` first"
        )
    model = models.load(version)
    click.echo(f"{doing} with model {version}, the version the fleet serves", err=True)
    return model


# The `train` extra: what training and file work import, and serving never does.
TRAINING_PACKAGES = {"sklearn", "scipy", "pandas", "pyarrow", "matplotlib", "threadpoolctl"}
TRAINING_INSTALL = (
    "pip install 'nomads-cluster[train]', or in the repository "
    "pip install --require-hashes -r requirements-train.txt"
)


@contextmanager
def training_packages(command: str) -> Iterator[None]:
    """Around a command's imports: a missing training package is a one-line error that
    says what to install (a serving install has none of them)."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in TRAINING_PACKAGES:
            raise
        raise click.ClickException(
            f"`nomads-cluster {command}` needs {exc.name}, one of the training packages, "
            f"which this installation does not have: {TRAINING_INSTALL}"
        ) from None


def counted(number: int, noun: str) -> str:
    """ "1 user", "2 users": the number and its noun, in the right number."""
    return f"{number} {noun}{'' if number == 1 else 's'}"
