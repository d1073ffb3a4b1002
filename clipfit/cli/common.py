"""What every clipfit command shares: logging setup and error reporting."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from clipfit.errors import ClipfitError

logger = logging.getLogger("clipfit")
T = TypeVar("T")


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def setup_logging(verbose: int = 0, quiet: bool = False, main_process: bool = True) -> None:
    """clipfit's messages: info to stdout, warnings and errors to stderr. Idempotent.

    Other libraries keep Python's default (warnings to stderr). Non-main processes of a
    distributed job only report warnings.
    """
    clipfit_logger = logging.getLogger("clipfit")
    for handler in list(clipfit_logger.handlers):
        if getattr(handler, "_clipfit_console", False):
            clipfit_logger.removeHandler(handler)
    level = logging.DEBUG if verbose else logging.INFO
    if quiet or not main_process:
        level = logging.WARNING
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(logging.Formatter("%(message)s"))
    out.addFilter(_Below(logging.WARNING))
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler._clipfit_console = True  # type: ignore[attr-defined]
        clipfit_logger.addHandler(handler)
    out.setLevel(level)
    clipfit_logger.setLevel(logging.DEBUG)
    clipfit_logger.propagate = False


def run_command(body: Callable[[], T]) -> T | int:
    """Run a command body; a ClipfitError becomes a one-paragraph message and exit status 2 (the
    returned int), an interrupt exit status 130."""
    try:
        return body()
    except ClipfitError as exc:
        logger.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        logger.error("interrupted; a run resumes from its last finished epoch with --resume RUN_DIR")
        return 130
