"""The cells of a ``clipfit-train`` sweep, run one after the other or in local worker processes; their summary.

A sweep (datasets x settings x recipes x shots x seeds) is a list of independent cells, one run directory each
(:func:`clipfit.rundir.default_run_dir`). Every launcher runs a cell the same way (:func:`run_cell`:
:func:`clipfit.run.train_run`, which skips a finished run and resumes a partial one) and hands back a
:class:`CellOutcome`; :func:`summary` prints them in the sweep's order, whichever finished first, so a parallel
sweep reports exactly what a sequential one does.

- :class:`Sequential` (the default, and the only one under torchrun): in this process.
- :class:`LocalPool` (``--workers N``): N worker processes on this machine, each taking the next waiting cell. Worker
  i computes on ``cuda:i`` when the machine has GPUs (``--workers auto``: one per GPU), else on the CPU with
  ``cores // N`` torch threads ($OMP_NUM_THREADS when set): processes that share cores at torch's default threading
  spin against each other (measured on 2 cores: a shapes run beside two others at default threading ran about 40x
  slower per epoch).
- :class:`clipfit.cluster.SubmititLauncher` (``--cluster``): one SLURM array task per unfinished cell.

A failed cell does not stop the others: its error goes into its run directory (``error.txt``, removed when the
cell later finishes) and into the summary, and the sweep exits with status 2. A data error skips the cells of that
dataset that have not started; a full disk stops dispatching and ends the sweep with its one-line message. Progress
is logged as cells start and end (done / running / failed / waiting).

Results are those of a sequential sweep: a cell computes the same thing in any process. On the CPU they are
identical bit for bit when the processes use the same number of torch threads (floating-point sums are split by
thread; measured on shapes: 16 of 48 checkpoint tensors differ in their last bits between 1 and 2 threads, with
the same accuracies), so a sequential sweep run with ``OMP_NUM_THREADS=k`` matches ``--workers N`` on ``k * N``
cores exactly.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from multiprocessing import connection
from pathlib import Path
from typing import Any

from clipfit.config import RunConfig
from clipfit.data.base import DataError
from clipfit.errors import ClipfitError, ConfigError
from clipfit.files import DiskFullError
from clipfit.metrics import mean_over_seeds
from clipfit.rundir import RunDir, SettingsMismatchError
from clipfit.runlock import RunLockedError
from clipfit.runtime import DistEnv

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    """One run of a sweep: its settings, its run directory, its place in the sweep."""

    index: int  # position in the sweep (0-based)
    config: dict[str, Any]  # RunConfig.to_dict() (plain data: crosses process boundaries as it is)
    run_dir: str

    @property
    def cfg(self) -> RunConfig:
        return RunConfig.from_dict(self.config)

    @property
    def dataset(self) -> str:
        return self.config["data"]["dataset"]

    @property
    def label(self) -> str:
        c = self.config
        return (
            f"{c['data']['dataset']} {c['data']['setting']} {c['recipe']} shots {c['data']['shots']} seed {c['seed']}"
        )


@dataclass(frozen=True)
class CellOptions:
    """What every cell of a sweep shares beyond its settings."""

    overwrite: bool = False  # replace existing run directories
    dry_run: bool = False  # build and resolve, train nothing
    report_to: tuple[str, ...] = ()  # experiment trackers (clipfit.tracking)


@dataclass
class CellOutcome:
    """What one cell gave: results, or why not."""

    index: int
    status: str  # done, dry run, failed, skipped
    results: dict[str, Any] | None = None
    note: str = ""  # the summary's text for a cell without results
    error: str | None = None  # the error's message (the traceback of a bug is in the cell's error.txt)
    data_error: bool = False  # the dataset could not be read: its other cells are skipped
    fatal: bool = False  # a full disk: no further cell can succeed
    seconds: float = 0.0
    where: str = ""  # the process or task that ran it


def run_cell(cell: Cell, options: CellOptions, env: DistEnv = DistEnv(), reraise: bool = False) -> CellOutcome:
    """Train and evaluate one cell in this process; every error becomes the outcome (``reraise``: the errors that
    must stop a torchrun job, see :class:`Sequential`)."""
    from clipfit.run import train_run

    started = time.time()
    run = RunDir(Path(cell.run_dir), writable=env.is_main)
    try:
        results = train_run(
            cell.cfg, run.path, env=env, overwrite=options.overwrite, dry_run=options.dry_run,
            report_to=list(options.report_to),
        )  # fmt: skip
    except RunLockedError as exc:
        logger.error("%s: %s", cell.label, exc)
        return CellOutcome(cell.index, "skipped", note="skipped: another process trains it", error=str(exc))
    except ClipfitError as exc:
        fatal = isinstance(exc, DiskFullError)
        if reraise and (fatal or (env.distributed and not isinstance(exc, DataError))):
            # A full disk fails every later run too. Under torchrun an error may be raised on some processes only
            # (rank 0 alone writes files): going on would leave the others waiting in a collective of this run.
            # Stop the whole job; the same command resumes the sweep. (A data error is met by every process alike:
            # each reads the dataset after the main process; so is a locked folder: rank 0 tells the others.)
            raise
        logger.error("%s: %s", cell.label, exc)
        data = isinstance(exc, DataError)
        if not options.dry_run and not data and not isinstance(exc, SettingsMismatchError):  # (another run's folder)
            _record_error(run, f"{type(exc).__name__}: {exc}")
        note = "failed: data error" if data else f"failed: {type(exc).__name__}"
        return CellOutcome(cell.index, "failed", note=note, error=str(exc), data_error=data, fatal=fatal)
    except Exception as exc:  # a bug: its traceback goes to the cell's error.txt and the log, the sweep goes on
        if reraise and env.distributed:
            raise
        logger.exception("%s failed", cell.label)
        if not options.dry_run:
            _record_error(run, traceback.format_exc())
        return CellOutcome(
            cell.index, "failed", note=f"failed: {type(exc).__name__}", error=f"{type(exc).__name__}: {exc}"
        )
    if options.dry_run:
        return CellOutcome(cell.index, "dry run", note="dry run: data resolved", seconds=time.time() - started)
    with contextlib.suppress(OSError):
        run.clear_error()
    return CellOutcome(cell.index, "done", results=results, seconds=time.time() - started)


def _record_error(run: RunDir, text: str) -> None:
    try:
        run.write_error(text)
    except OSError as exc:  # a full disk or a read-only folder: the summary still has it
        logger.debug("could not write %s's error file: %s", run.path, exc)


# ---------------------------------------------------------------------------------------------- progress


class Progress:
    """Counts cells as they start and end; logs a line per event: ``[3/8 done, 2 running, 1 failed, 2 waiting]``
    (and how many were skipped, when some were)."""

    def __init__(self, cells: Sequence[Cell]) -> None:
        self.total = len(cells)
        self.running: set[int] = set()
        self.outcomes: dict[int, CellOutcome] = {}

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes.values() if o.status == "failed")

    def line(self) -> str:
        waiting = self.total - len(self.outcomes) - len(self.running)
        done = sum(1 for o in self.outcomes.values() if o.status in ("done", "dry run"))
        skipped = len(self.outcomes) - done - self.failed
        return (
            f"[{done}/{self.total} done, {len(self.running)} running, {self.failed} failed, "
            + (f"{skipped} skipped, " if skipped else "")
            + f"{waiting} waiting]"
        )

    def start(self, cell: Cell, where: str) -> None:
        self.running.add(cell.index)
        logger.info("%s start %s (%s) -> %s", self.line(), cell.label, where, cell.run_dir)

    def end(self, cell: Cell, outcome: CellOutcome) -> None:
        self.running.discard(cell.index)
        self.outcomes[cell.index] = outcome
        # the reason of a failure is logged where it happens and in the summary; here only what became of the run
        what = outcome.status if outcome.results is None else _format(outcome.results.get("metrics"))
        logger.info("%s end %s: %s (%.0fs)", self.line(), cell.label, what, outcome.seconds)


def _format(metrics: dict[str, float | None] | None) -> str:
    from clipfit.console import format_metrics

    return format_metrics(metrics, width=6) if metrics else ""


# ---------------------------------------------------------------------------------------------- launchers


class Sequential:
    """Every cell in this process, in order (also under torchrun: every process runs every cell together)."""

    def __init__(self, env: DistEnv = DistEnv()) -> None:
        self.env = env

    def run(self, cells: Sequence[Cell], options: CellOptions) -> list[CellOutcome]:
        progress, broken = Progress(cells), set()
        for cell in cells:
            if cell.dataset in broken:
                progress.end(cell, CellOutcome(cell.index, "skipped", note="skipped: data error above"))
                continue
            progress.start(cell, "this process")
            outcome = run_cell(cell, options, self.env, reraise=True)
            if outcome.data_error:
                broken.add(cell.dataset)
            progress.end(cell, outcome)
        return [progress.outcomes[c.index] for c in cells]


def available_cpus() -> int:
    """CPUs this process may use (its affinity: a SLURM allocation or taskset), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _omp_threads() -> int | None:
    """$OMP_NUM_THREADS, when set to a number: the user's choice of threads per process wins."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def _worker(
    wid: int, device: str | None, threads: int, tasks, results, options: CellOptions, level: int, runner
) -> None:
    """A pool worker: set its threads (before torch computes anything), then run cells until told to stop."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    from clipfit.data.loaders import LOADER_WORKERS_ENV  # (imports torch: after OMP_NUM_THREADS is set)

    # the worker's DataLoaders decode within its share of the cores too (clipfit.data.loaders.default_workers)
    os.environ.setdefault(LOADER_WORKERS_ENV, str(threads // 2))
    os.environ["TQDM_DISABLE"] = "1"  # N workers' bars would garble the terminal; the parent logs the progress
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops the workers
    import torch

    from clipfit.console import setup_logging

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    if device is not None and device.startswith("cuda"):
        torch.cuda.set_device(device)  # else pinned memory and the like open a context on cuda:0 in every worker
    setup_logging(verbose=int(level < logging.INFO), quiet=level >= logging.INFO)  # -v: everything
    while True:
        cell = tasks.get()
        if cell is None:
            return
        if device is not None and cell.config.get("device", "auto") in ("auto", "cuda"):
            cell = replace(cell, config={**cell.config, "device": device})
        outcome = runner(cell, options)
        outcome.where = f"worker {wid}" + (f" on {device}" if device else "")
        results.send((wid, outcome))  # this worker's own pipe (see LocalPool.run)


@dataclass
class _Slot:
    wid: int
    device: str | None
    process: Any = None
    tasks: Any = None
    results: Any = None  # the receiving end of the worker's pipe
    cell: Cell | None = None


@dataclass
class LocalPool:
    """``workers`` processes on this machine, each running one cell at a time.

    ``devices``: one per worker (``cuda:0``, ``cuda:1``, ...) for cells whose device is ``auto``; None computes
    where a run's ``auto`` says (the CPU on a machine without GPUs). ``threads``: torch threads per worker
    (default: $OMP_NUM_THREADS when set, else this process's CPUs divided by the workers, at least one).
    """

    workers: int
    devices: list[str] | None = None
    threads: int | None = None
    poll_s: float = 1.0  # how often a silent pool checks that its workers live
    runner: Any = run_cell  # what a worker calls per cell (a module-level function: it crosses to the workers)
    _context: Any = field(default=None, repr=False)

    @classmethod
    def for_machine(cls, workers: int | str, device: str | None = None) -> LocalPool:
        """``workers``: a number, or ``auto`` (one per GPU; 1 without GPUs). Workers take GPUs in turn when the
        machine has them and ``device`` is unset or auto."""
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if workers == "auto":
            workers = max(1, gpus)
        workers = int(workers)
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1 (or auto), got {workers}")
        devices = [f"cuda:{i % gpus}" for i in range(workers)] if gpus and device in (None, "auto", "cuda") else None
        return cls(workers, devices)

    def run(self, cells: Sequence[Cell], options: CellOptions) -> list[CellOutcome]:
        ctx = self._context or multiprocessing.get_context("spawn")  # fork after torch threads is unsafe
        threads = self.threads or _omp_threads() or max(1, available_cpus() // self.workers)
        slots = [_Slot(i, self.devices[i] if self.devices else None) for i in range(min(self.workers, len(cells)))]
        progress, waiting, fatal = Progress(cells), list(cells), None
        level = _console_level()
        by_index = {c.index: c for c in cells}

        def start(slot: _Slot) -> None:
            # A queue and a pipe of its own per worker: a worker killed while it writes (out of memory, kill -9)
            # can leave a shared queue's write lock taken forever, which would hang every other worker's results.
            slot.tasks = ctx.Queue()
            slot.results, send = ctx.Pipe(duplex=False)
            slot.process = ctx.Process(
                target=_worker,
                args=(slot.wid, slot.device, threads, slot.tasks, send, options, level, self.runner),
                name=f"clipfit-sweep-worker-{slot.wid}",
                daemon=True,
            )
            slot.process.start()
            send.close()  # the worker holds the sending end: its death reads as end-of-file here

        def dispatch(slot: _Slot) -> None:
            slot.cell = waiting.pop(0) if waiting and fatal is None else None
            slot.tasks.put(slot.cell)
            if slot.cell is not None:
                progress.start(slot.cell, f"worker {slot.wid}" + (f" on {slot.device}" if slot.device else ""))

        logger.info(
            "sweep of %d runs on %d worker processes (%s, %d torch threads each)",
            len(cells), len(slots), ", ".join(s.device for s in slots) if self.devices else "cpu", threads,
        )  # fmt: skip
        try:
            for slot in slots:
                start(slot)
                dispatch(slot)
            while any(s.cell is not None for s in slots):
                busy = [s for s in slots if s.cell is not None]
                ready = set(connection.wait([s.results for s in busy], timeout=self.poll_s))
                for slot in busy:
                    outcome = None
                    if slot.results in ready:
                        try:
                            _, outcome = slot.results.recv()
                        except (EOFError, OSError):  # the worker died (before or while sending)
                            slot.process.join(timeout=5)
                    if outcome is None:
                        if not slot.process.is_alive():
                            self._lost(slot, progress)
                            start(slot)
                            dispatch(slot)
                        continue
                    cell = by_index[outcome.index]
                    if outcome.data_error:  # its other cells would fail alike: skip those not yet started
                        for other in [c for c in waiting if c.dataset == cell.dataset]:
                            waiting.remove(other)
                            progress.end(other, CellOutcome(other.index, "skipped", note="skipped: data error above"))
                    if outcome.fatal:
                        fatal = outcome.error
                    progress.end(cell, outcome)
                    dispatch(slot)
        finally:
            for slot in slots:
                if slot.process is not None and slot.process.is_alive():
                    if slot.cell is None:
                        slot.process.join(timeout=10)
                    if slot.process.is_alive():
                        slot.process.terminate()  # our own child, by its handle
                        slot.process.join(timeout=10)
        if fatal is not None:  # like a sequential sweep: the full disk's one line ends it
            raise ClipfitError(fatal)
        return [progress.outcomes[c.index] for c in cells]

    def _lost(self, slot: _Slot, progress: Progress) -> None:
        """A worker died in the middle of a cell (killed, out of memory, a crash in native code)."""
        cell = slot.cell
        assert cell is not None
        message = f"the worker process running it died (exit code {slot.process.exitcode})"
        logger.error("%s: %s", cell.label, message)
        _record_error(RunDir(Path(cell.run_dir)), message)
        progress.end(cell, CellOutcome(cell.index, "failed", note="failed: worker died", error=message))
        slot.cell = None


def _console_level() -> int:
    """The level of this process's clipfit console (INFO by default, DEBUG with -v, WARNING with -q). Workers print
    only warnings unless it is DEBUG: the progress lines are the parent's, and each run's log.txt has the rest."""
    levels = [h.level for h in logging.getLogger("clipfit").handlers if getattr(h, "_clipfit_console", False)]
    return min(levels, default=logging.INFO)


# ---------------------------------------------------------------------------------------------- summary


def summary(cells: Sequence[Cell], outcomes: Sequence[CellOutcome]) -> str:
    """The sweep's table in its order (zero-shot in brackets), and means over seeds where a cell has several."""
    rows = list(zip(cells, outcomes, strict=True))
    lines = [f"sweep of {len(cells)} runs (zero-shot in brackets):"]
    for cell, outcome in rows:
        head = f"{_axes(cell.cfg)} seed {cell.cfg.seed:<2}"
        if outcome.results:
            results = outcome.results
            lines.append(f"  {head}  {_format(results['metrics'])}  [{_format(results['zero_shot'])}]  {cell.run_dir}")
        else:
            lines.append(f"  {head}  {outcome.note}  {cell.run_dir}")
    groups: dict[str, list[dict]] = {}
    for cell, outcome in rows:
        if outcome.results:
            groups.setdefault(_axes(cell.cfg), []).append(outcome.results)
    if any(len(v) > 1 for v in groups.values()):
        lines.append("means over seeds (HM of the mean Base and mean New):")
        for axes, results in groups.items():
            lines.append(f"  {axes} {len(results)} seeds  {_format(mean_over_seeds([r['metrics'] for r in results]))}")
    return "\n".join(lines)


def _axes(cfg: RunConfig) -> str:
    return f"{cfg.data.dataset:<16} {cfg.data.setting:<8} {cfg.recipe:<13} shots {cfg.data.shots:<2}"


def failures(outcomes: Sequence[CellOutcome]) -> int:
    """Cells without results (a dry run's resolved cells do not count)."""
    return sum(1 for o in outcomes if o.results is None and o.status != "dry run")
