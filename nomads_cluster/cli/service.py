"""What the commands share: the app as the service builds it (the same NOMADS_* and
DATABASE_URL settings), and their wording of counts."""

from collections.abc import Iterator
from contextlib import contextmanager

import click
from flask import Flask

from ..segmentation.model import ModelError


@contextmanager
def service() -> Iterator[Flask]:
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


def counted(number: int, noun: str) -> str:
    """ "1 user", "2 users": the number and its noun, in the right number."""
    return f"{number} {noun}{'' if number == 1 else 's'}"
