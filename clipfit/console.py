"""What every clipfit command shares on the console: logging setup, error reporting, result lines.

Library code logs through ``logging.getLogger(__name__)``; only the commands (``clipfit-train``,
``clipfit-eval``, ``clipfit-analyze``) call :func:`setup_logging`. A :class:`ClipfitError` is bad
input or state the user can fix: :func:`run_command` prints its message without a traceback and
returns exit status 2, while real bugs keep their traceback. A full disk is the user's to fix as well: it
ends in the same one line (:func:`clipfit.files.disk_full_message`) wherever the write came from.

Progress: on a terminal, long loops show tqdm bars (on stderr), and the console's log lines are written
through ``tqdm.write``, which clears the bars, writes the line and redraws them, so a line never lands in
the middle of a bar. When stdout is not a terminal (a log file, CI, ``nohup``), bars are not drawn and a
:class:`Heartbeat` logs one line every N steps instead: the position, the rate (images/s) and the ETA.
N is ``$CLIPFIT_HEARTBEAT`` (default 50; 0 turns the lines off).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import clipfit
from clipfit.errors import ClipfitError
from clipfit.files import disk_full_message, is_disk_full

logger = logging.getLogger("clipfit")
T = TypeVar("T")

HEARTBEAT_ENV = "CLIPFIT_HEARTBEAT"
DEFAULT_HEARTBEAT = 50  # steps between heartbeat lines in a non-terminal log


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


class _BarSafeHandler(logging.StreamHandler):
    """A console handler that writes through ``tqdm.write``: active progress bars are cleared first and
    redrawn after the line, so log lines never overwrite a bar (what tqdm's ``logging_redirect_tqdm`` does)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm  # light, and only once something is logged

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


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
    out = _BarSafeHandler(sys.stdout)
    out.setFormatter(logging.Formatter("%(message)s"))
    out.addFilter(_Below(logging.WARNING))
    err = _BarSafeHandler(sys.stderr)
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
    # dataset-setting-recipe-shotsK-seedS of a default run directory (no root, no "..": /tmp/x gives tmp-x)
    name = "-".join(p for p in Path(run_dir).parts[-5:] if p not in (Path(run_dir).anchor, "..", ".")) or "run"
    return "\n".join(
        [
            "next:",
            f"  clipfit-analyze report {run} --out {shlex.quote('reports/' + name)}",
            f"  clipfit-predict {run} IMAGES_OR_FOLDER --classnames FILE --out predictions.csv",
            f"  clipfit-export {run} --out {shlex.quote('exports/' + name)}",
        ]
    )


def results_next_commands(tree: str | Path) -> str:
    """What to do after a sweep or an evaluation on other datasets: their tables over seeds and datasets."""
    return f"next:\n  clipfit-analyze results {shlex.quote(str(tree))}"


def heartbeat_every() -> int:
    """Steps between heartbeat lines (``$CLIPFIT_HEARTBEAT``; 0: none)."""
    value = os.environ.get(HEARTBEAT_ENV, "").strip()
    try:
        return max(0, int(value)) if value else DEFAULT_HEARTBEAT
    except ValueError:
        logger.warning("%s=%r is not a number of steps; using %d", HEARTBEAT_ENV, value, DEFAULT_HEARTBEAT)
        return DEFAULT_HEARTBEAT


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(max(0.0, seconds))))


def _amount(value: float, unit: str) -> str:
    if unit != "B":
        return f"{value:,.0f}"
    for prefix in ("", "k", "M", "G", "T"):
        if abs(value) < 1000 or prefix == "T":
            return f"{value:.0f} B" if not prefix else f"{value:.1f} {prefix}B"
        value /= 1000
    raise AssertionError("unreachable")


class Heartbeat:
    """One log line every ``every`` steps when stdout is not a terminal: position, rate and ETA.

    ``heartbeat.update(n, count)`` after each of ``n`` steps that processed ``count`` items (images, bytes);
    the rate is counted items per second since the heartbeat started (``initial`` steps were done before:
    a resumed run), the ETA the remaining steps at the rate of steps so far. On a terminal it stays silent:
    the progress bar says the same.

    Example line: ``train: step 150/1,600 (9%)  312.4 img/s  elapsed 0:00:48  ETA 0:07:45  loss 1.234``.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        unit: str = "step",
        count_unit: str = "img",
        initial: int = 0,
        every: int | None = None,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.count_unit = total, desc, unit, count_unit
        self.done, self.count, self.every, self.clock = initial, 0, heartbeat_every() if every is None else every, clock
        self.enabled = enabled and self.every > 0 and not _is_terminal(sys.stdout)
        self.started, self.next_at, self.initial = clock(), initial + self.every, initial
        self.postfix: dict[str, Any] = {}

    def update(self, n: int = 1, count: int = 0, **postfix: Any) -> None:
        """``n`` more steps done, ``count`` more items processed; ``postfix`` values go at the end of the line."""
        self.done += n
        self.count += count
        self.postfix.update(postfix)
        if self.enabled and self.done >= self.next_at:
            self.next_at = (self.done // self.every + 1) * self.every
            logger.info("%s", self.line())

    def line(self) -> str:
        """The heartbeat line for the current position."""
        elapsed = self.clock() - self.started
        steps = self.done - self.initial
        where = _amount(self.done, self.unit) if self.unit == "B" else f"{self.unit} {_amount(self.done, self.unit)}"
        if self.total:
            where += f"/{_amount(self.total, self.unit)} ({100 * self.done / self.total:.0f}%)"
        parts = [f"{self.desc}: {where}"]
        if elapsed > 0 and self.count:
            rate = self.count / elapsed
            unit = self.count_unit
            parts.append(f"{_amount(rate, unit)}/s" if unit == "B" else f"{rate:.1f} {unit}/s")
        parts.append(f"elapsed {_duration(elapsed)}")
        if self.total and elapsed > 0 and steps > 0:
            parts.append(f"ETA {_duration((self.total - self.done) * elapsed / steps)}")
        parts.extend(f"{k} {v}" for k, v in self.postfix.items())
        return "  ".join(parts)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def progress(
    items: Iterable[T],
    desc: str,
    *,
    total: int | None = None,
    unit: str = "batch",
    count: Callable[[T], int] | None = None,
    count_unit: str = "img",
    every: int | None = None,
    enabled: bool = True,
    leave: bool = False,
) -> Iterator[T]:
    """``items`` with a tqdm bar on a terminal and heartbeat lines in a log (see :class:`Heartbeat`).

    ``count(item)`` is how many images (``count_unit``) an item holds, for the rate; ``every`` items between
    heartbeat lines (default: ``$CLIPFIT_HEARTBEAT``).
    """
    from tqdm import tqdm

    if total is None:
        total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    beat = Heartbeat(total, desc, unit=unit, count_unit=count_unit, every=every, enabled=enabled)
    with tqdm(items, desc=desc, total=total, unit=unit, disable=None if enabled else True, leave=leave) as bar:
        for item in bar:
            yield item
            beat.update(1, count(item) if count else 0)


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
