"""Waiting for something that happens in another thread or process."""

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], bool], seconds: float = 15, step: float = 0.05) -> bool:
    """Whether ``condition()`` became true within ``seconds`` (checked every ``step``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()
