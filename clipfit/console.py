"""What every clipfit command shares on the console: logging setup, error reporting, result lines.

Library code logs through ``logging.getLogger(__name__)``; only the commands (``clipfit-train``,
``clipfit-eval``, ``clipfit-analyze``) call :func:`setup_logging`. A :class:`ClipfitError` is bad
input or state the user can fix: :func:`run_command` prints its message without a traceback and
returns exit status 2, while real bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

from clipfit.errors import ClipfitError

logger = logging.getLogger("clipfit")
T = TypeVar("T")


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def setup_logging(verbose: int = 0, quiet: bool = False, main_process: bool = True, name: str = "clipfit") -> None:
    """Console handlers of the ``name`` logger: info to stdout, warnings and errors to stderr. Idempotent.

    Other libraries keep Python's default (warnings to stderr). Non-main processes of a
    distributed job only report warnings.
    """
    target = logging.getLogger(name)
    for handler in list(target.handlers):
        if getattr(handler, "_clipfit_console", False):
            target.removeHandler(handler)
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
        target.addHandler(handler)
    out.setLevel(level)
    target.setLevel(logging.DEBUG)
    target.propagate = False


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a two-line error: the short usage and the message, not the whole usage block.

    (``clipfit-analyze`` has its own copy in ``analysis/cli.py``: its ``--help`` imports no clipfit module.)
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"usage: {self.prog} [options]  ({self.prog} --help lists them)\n{self.prog}: error: {message}\n")


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


def _fmt(value: float | None, width: int = 0) -> str:
    return f"{value:{width}.2f}" if value is not None else f"{'n/a':>{width}}"


def format_metrics(metrics: Mapping[str, float | None], width: int = 0) -> str:
    """``base 65.08  new 62.58  HM 63.80`` or ``acc 71.20`` (n/a where a metric does not apply)."""
    if "acc" in metrics:
        return f"acc {_fmt(metrics['acc'], width)}"
    parts = (("base", "base_acc"), ("new", "new_acc"), ("HM", "hm"))
    return "  ".join(f"{label} {_fmt(metrics[key], width)}" for label, key in parts)


def results_table(results: Mapping[str, Any]) -> str:
    """The zero-shot vs fine-tuned table of one run, as printed at the end of clipfit-train."""
    zs, ft = results["zero_shot"], results["metrics"]
    keys = [("base_acc", "Base"), ("new_acc", "New"), ("hm", "HM")] if "base_acc" in ft else [("acc", "Acc")]
    width = max(len("zero-shot"), len(results["recipe"])) + 2
    rows = [" " * width + "".join(f"{title:>8}" for _, title in keys)]
    named = [("zero-shot", zs)] + ([(results["recipe"], ft)] if results["recipe"] != "zero-shot" else [])
    for label, values in named:
        rows.append(f"{label:<{width}}" + "".join(_fmt(values[k], 8) for k, _ in keys))
    return "\n".join(rows)
