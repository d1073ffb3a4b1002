"""A sweep's cells as SLURM array tasks through submitit (``clipfit-train --cluster``).

:class:`SubmititLauncher` (``--cluster slurm``; ``local`` and ``debug`` for trying it on one machine): one array task
per unfinished cell through submitit, an optional dependency (``pip install 'clipfit[submitit]'``), imported only
when an executor is made. Each task runs its cell as every launcher of :mod:`clipfit.sweeps` does
(:func:`clipfit.sweeps.run_cell`) and hands back a :class:`~clipfit.sweeps.CellOutcome`. A task preempted or out of
time is requeued and resumes from its run directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipfit.config import CLUSTERS, resolve
from clipfit.errors import ConfigError
from clipfit.rundir import RunDir
from clipfit.runlock import RunLock
from clipfit.sweeps import (
    Cell,
    CellOptions,
    CellOutcome,
    Progress,
    _omp_threads,
    _record_error,
    available_cpus,
    run_cell,
)

logger = logging.getLogger(__name__)

SUBMITIT_INSTALL = "pip install 'clipfit[submitit]'"


class _SubmititCell:
    """What a submitit array task runs: one cell; requeued when SLURM preempts it or its time runs out."""

    def __init__(self, options: CellOptions) -> None:
        self.options = options

    def __call__(self, cell: Cell) -> CellOutcome:
        import torch

        # the task's CPUs, not the node's (torch's default), unless OMP_NUM_THREADS says otherwise
        threads = _omp_threads() or available_cpus()
        torch.set_num_threads(threads)
        from clipfit.console import setup_logging

        setup_logging()
        outcome = run_cell(cell, self.options)
        outcome.where = os.environ.get("SLURM_JOB_ID", f"pid {os.getpid()}")
        return outcome

    def checkpoint(self, cell: Cell) -> Any:
        """Requeue this cell (submitit calls this on preemption or timeout). The run directory holds its last
        epoch; the lock this process holds is released so the requeued task, maybe on another node, takes it."""
        import submitit

        _release_own_lock(Path(cell.run_dir))
        return submitit.helpers.DelayedSubmission(self, cell)


def _release_own_lock(run_dir: Path) -> None:
    lock = RunLock(run_dir)
    holder = lock.holder()
    if holder is not None and holder.pid == os.getpid():
        with contextlib.suppress(OSError):
            lock.path.unlink()


def submitit_executor(cluster: str, folder: Path, parameters: dict[str, Any]) -> Any:
    """submitit's executor for ``cluster`` (slurm, local or debug), its logs in ``folder``."""
    try:
        import submitit
    except ImportError:
        raise ConfigError(f"--cluster needs the submitit package, which is not installed: {SUBMITIT_INSTALL}") from None
    if cluster not in CLUSTERS:
        raise ConfigError(f"unknown --cluster {cluster!r}; expected one of {', '.join(CLUSTERS)}")
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    try:
        executor.update_parameters(**{"name": "clipfit-sweep", **parameters})
    except (TypeError, ValueError, NameError) as exc:
        raise ConfigError(f"--cluster-option: {exc}") from None
    return executor


def parse_cluster_options(items: Sequence[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> submitit parameters (numbers as numbers): ``timeout_min=240 slurm_partition=gpu``."""
    parameters: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--cluster-option {item!r}: expected KEY=VALUE, e.g. timeout_min=240")
        text: Any = value.strip()
        for kind in (int, float):
            try:
                text = kind(text)
                break
            except ValueError:
                continue
        parameters[key.strip()] = text
    return parameters


@dataclass
class SubmititLauncher:
    """One array task per cell that has not finished, through a submitit executor; waits and reports progress.

    A finished cell (its results.json exists, with the cell's settings) is read, not submitted. Interrupting the
    wait leaves the tasks running on the cluster: the same command later collects what they finished (and skips a
    cell whose task still trains, by its run lock).
    """

    executor: Any
    poll_s: float = 10.0

    def run(self, cells: Sequence[Cell], options: CellOptions) -> list[CellOutcome]:
        progress = Progress(cells)
        todo = []
        for cell in cells:
            run = RunDir(Path(cell.run_dir))
            finished = run.state == "finished" and not options.overwrite and not options.dry_run
            # a finished run of other settings is not this cell's result: its task refuses it, as in a sequential sweep
            if finished and not run.settings_differences(resolve(cell.cfg)):
                progress.end(cell, CellOutcome(cell.index, "done", results=run.results(), where="finished before"))
            else:
                todo.append(cell)
        if todo:
            jobs = self.executor.map_array(_SubmititCell(options), todo)
            logger.info(
                "submitted %d array tasks (job %s); %d runs had finished before",
                len(jobs), jobs[0].job_id.split("_")[0], len(cells) - len(todo),
            )  # fmt: skip
            pending = dict(zip((c.index for c in todo), jobs, strict=True))
            by_index = {c.index: c for c in todo}
            wait = 0.5
            while pending:
                for index, job in list(pending.items()):
                    cell = by_index[index]
                    if not job.done():
                        if index not in progress.running and job.state in ("RUNNING", "COMPLETING"):
                            progress.start(cell, f"task {job.job_id}")
                        continue
                    del pending[index]
                    try:
                        outcome = job.result()
                    except Exception as exc:  # the task itself failed (killed, node lost, out of memory)
                        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                        _record_error(RunDir(Path(cell.run_dir)), f"array task {job.job_id} failed:\n{exc}")
                        outcome = CellOutcome(index, "failed", note="failed: task failed", error=message)
                    progress.end(cell, outcome)
                if pending:
                    time.sleep(wait)
                    wait = min(self.poll_s, wait * 1.5)
        return [progress.outcomes[c.index] for c in cells]
