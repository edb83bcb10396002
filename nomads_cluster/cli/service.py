"""What the commands share: the app as the service builds it (the same NOMADS_* and
DATABASE_URL settings), the training packages they may lack, and their wording of
counts."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from ..segmentation.model import ModelError

if TYPE_CHECKING:
    from flask import Flask


@contextmanager
def service() -> Iterator["Flask"]:
    """The app as the service builds it; its database connections closed at the end."""
    from .. import ConfigError, create_app
    from ..store.users import StoreUnavailable

    try:
        app = create_app()
    except (ConfigError, ModelError, StoreUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield app
    finally:
        app.extensions["user_store"].engine.dispose()


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
