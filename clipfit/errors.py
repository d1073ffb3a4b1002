"""The base of every error a user can act on. The CLI prints these without a traceback."""

from __future__ import annotations

_WORKER_PREFIX = "Caught "  # how torch starts the message of an error re-raised from a DataLoader worker
_WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):\n"


class ClipfitError(Exception):
    """Bad input or state, with a message that says what was wrong and what to do.

    An error raised in a DataLoader worker process reaches the main process as a new exception of
    the same class whose message is the worker's whole traceback (torch's ``ExceptionWrapper``);
    such a message is cut back to the original one, so a bad image reads the same whether it was
    met in the main process or in a worker.
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (_worker_message(args[0], type(self)),)
        super().__init__(*args)


def _worker_message(message: str, cls: type) -> str:
    """The original message inside a message that torch built from a worker's traceback, else ``message``."""
    if not message.startswith(_WORKER_PREFIX) or _WORKER_TRACEBACK not in message:
        return message
    name = cls.__qualname__ if cls.__module__ in ("builtins", "__main__") else f"{cls.__module__}.{cls.__qualname__}"
    _, found, original = message.rpartition(f"\n{name}: ")
    return original.rstrip("\n") if found else message


class ConfigError(ClipfitError, ValueError):
    """A setting is out of range or unknown."""


class RunError(ClipfitError, RuntimeError):
    """A run directory is in a state that would lose data or mix two runs (:mod:`clipfit.rundir`, its lock)."""
