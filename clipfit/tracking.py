"""Experiment tracking: the rows of metrics.jsonl also sent to TensorBoard and/or Weights & Biases.

``clipfit-train --report-to tensorboard,wandb`` (open_clip's flag) opens one sink per name for each
run; the trainer calls every sink with each row it writes to metrics.jsonl (``step, epoch, lr, loss,
ce, reg, acc``), and at the end the run's accuracies go in as a summary. Neither package is
required: a name whose package is missing is refused before anything is built, with the pip
command that installs it. TensorBoard's event files go to ``<run>/tensorboard/``; W&B's files to
``<run>/wandb/`` (or ``WANDB_DIR``), in the project ``WANDB_PROJECT`` (default ``clipfit``), online
or offline as ``WANDB_MODE`` says.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from clipfit.errors import ConfigError

logger = logging.getLogger(__name__)

# name -> (module that must import, the pip command that provides it)
BACKENDS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", 'pip install "clipfit[tensorboard]"  (or: pip install tensorboard)'),
    "wandb": ("wandb", 'pip install "clipfit[wandb]"  (or: pip install wandb)'),
}
TENSORBOARD_DIR = "tensorboard"


class MetricsSink(Protocol):
    """Where metrics rows go besides metrics.jsonl: called with each row, then given the results, then closed."""

    def __call__(self, row: Mapping[str, Any]) -> None: ...

    def summary(self, metrics: Mapping[str, float | None]) -> None: ...

    def close(self) -> None: ...


def parse_report_to(values: str | Sequence[str] | None) -> list[str]:
    """``"tensorboard,wandb"`` (or several values) -> the backend names; unknown names and missing packages are
    refused here, before a model is built or data is read. ``none`` or an empty value: no tracking."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    names = list(dict.fromkeys(n.strip().lower() for item in items for n in item.split(",") if n.strip()))
    names = [n for n in names if n != "none"]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ConfigError(
            f"--report-to: unknown {', '.join(unknown)}; choose from {', '.join(BACKENDS)} (comma-separated)"
        )
    for name in names:
        module, install = BACKENDS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"--report-to {name} needs the {module} package, which is not installed: {install}")
    return names


def _scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The row's numbers under ``train/`` (step and epoch are the axis, not values)."""
    return {
        f"train/{k}": float(v)
        for k, v in row.items()
        if k not in ("step",) and isinstance(v, int | float) and not isinstance(v, bool)
    }


class TensorBoardSink:
    """Scalars in TensorBoard event files (``tensorboard --logdir RUN_DIR`` shows them)."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def __call__(self, row: Mapping[str, Any]) -> None:
        for tag, value in _scalars(row).items():
            self.writer.add_scalar(tag, value, global_step=int(row["step"]))

    def summary(self, metrics: Mapping[str, float | None]) -> None:
        for key, value in metrics.items():
            if value is not None:
                self.writer.add_scalar(f"test/{key}", float(value), global_step=0)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """One W&B run per clipfit run, its config the run's settings and its name the run directory."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any], name: str) -> None:
        import wandb

        directory = os.environ.get("WANDB_DIR") or str(run_dir)
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "clipfit",
            name=name,
            config=dict(config),
            dir=directory,
            reinit="create_new",  # one W&B run per clipfit run, also within a sweep in one process
        )

    def __call__(self, row: Mapping[str, Any]) -> None:
        self.run.log(_scalars(row), step=int(row["step"]))

    def summary(self, metrics: Mapping[str, float | None]) -> None:
        for key, value in metrics.items():
            if value is not None:
                self.run.summary[f"test/{key}"] = float(value)

    def close(self) -> None:
        self.run.finish()


def open_sinks(names: Iterable[str], run_dir: Path, config: Mapping[str, Any], name: str) -> list[MetricsSink]:
    """A sink per backend name for one run (``name``: how the run is called in the tracker)."""
    sinks: list[MetricsSink] = []
    for backend in names:
        if backend == "tensorboard":
            sinks.append(TensorBoardSink(run_dir / TENSORBOARD_DIR))
        elif backend == "wandb":
            sinks.append(WandbSink(run_dir, config, name))
        logger.debug("reporting metrics to %s", backend)
    return sinks


def close_sinks(sinks: Iterable[MetricsSink], metrics: Mapping[str, float | None] | None = None) -> None:
    """Give every sink the run's accuracies (when it finished) and close it; a failing tracker only warns."""
    for sink in sinks:
        try:
            if metrics:
                sink.summary(metrics)
            sink.close()
        except Exception as exc:  # a tracker's failure must not cost the run's results
            logger.warning("closing %s failed: %s: %s", type(sink).__name__, type(exc).__name__, exc)
