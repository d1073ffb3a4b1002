"""What every clipfit command shares on the console: logging setup, error reporting, result lines.

Library code logs through ``logging.getLogger(__name__)``; only the commands (``clipfit-train``,
``clipfit-eval``, ``clipfit-analyze``) call :func:`setup_logging`. A :class:`ClipfitError` is bad
input or state the user can fix: :func:`run_command` prints its message without a traceback and
returns exit status 2, while real bugs keep their traceback. A full disk is the user's to fix as well: it
ends in the same one line (:func:`clipfit.files.disk_full_message`) wherever the write came from.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import clipfit
from clipfit.errors import ClipfitError
from clipfit.files import disk_full_message, is_disk_full

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


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    """``--version``: the command's name and clipfit's version (no heavy import: it must answer at once)."""
    parser.add_argument("--version", action="version", version=f"%(prog)s (clipfit {clipfit.__version__})")


def next_commands(run_dir: str | Path) -> str:
    """What to do with a finished run: its report, predictions on new images, an export (printed after training)."""
    run = shlex.quote(str(run_dir))
    name = "-".join(Path(run_dir).parts[-5:])  # dataset-setting-recipe-shotsK-seedS of a default run directory
    return "\n".join(
        [
            "next:",
            f"  clipfit-analyze report {run} --out reports/{name}",
            f"  clipfit-predict {run} IMAGES_OR_FOLDER --classnames FILE --out predictions.csv",
            f"  clipfit-export {run} --out exports/{name}",
        ]
    )


def run_command(body: Callable[[], T]) -> T | int:
    """Run a command body; a ClipfitError becomes a one-paragraph message and exit status 2 (the
    returned int), an interrupt exit status 130."""
    try:
        return body()
    except ClipfitError as exc:
        logger.error("%s", exc)
        return 2
    except OSError as exc:  # a full disk met by a write that does not go through clipfit.files
        if not is_disk_full(exc):
            raise
        logger.error("%s", disk_full_message(exc.filename))
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
    named = [("zero-shot", zs)]
    if results.get("zero_shot_published"):  # the published protocol's template, where it differs (DTD)
        named.append(("zero-shot, published template", results["zero_shot_published"]["metrics"]))
    check = results.get("self_check")
    if check:
        named.append(("zero-shot, published", check["published"]))
    if results["recipe"] != "zero-shot":
        named.append((results["recipe"], ft))
    width = max(width, *(len(label) + 2 for label, _ in named))
    rows = [" " * width + "".join(f"{title:>8}" for _, title in keys)]
    for label, values in named:
        rows.append(f"{label:<{width}}" + "".join(_fmt(values.get(k), 8) for k, _ in keys))
    if check:
        worst = max((abs(d) for d in check["difference"].values()), default=0.0)
        verdict = "within" if check["ok"] else "OFF: more than"
        rows.append(
            f"self-check against {check['reference']}: {verdict} {check['tolerance']:g} point of the published "
            f"zero-shot (largest difference {worst:.2f})"
        )
    return "\n".join(rows)
