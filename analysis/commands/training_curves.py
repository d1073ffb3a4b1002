"""``clipfit-analyze training-curves``: loss, ce, reg and accuracy per logged step, from the runs' metrics.jsonl.

Each row of metrics.jsonl gives the means over the steps since the previous row (loss = ce + lambda * reg, the
training accuracy, and validation accuracy rows ``{"step", "epoch", "val_acc"}`` where a run logs them; see
:mod:`analysis.training_curves`). Several runs: the seeds of one configuration as their mean with a band of
± one sample std, configurations side by side. Runs without a metrics.jsonl (a bare checkpoint) are named and
skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.commands.bundle import announce, note_left_out, write_figure
from analysis.commands.common import Common, load_sources
from analysis.errors import AnalysisError
from analysis.outputs import OutputDir
from analysis.sources import Source, configurations, default_labels
from analysis.training_curves import training_curve_configs, training_curves
from clipfit.rundir import read_jsonl
from figures.report import ReportFigure
from figures.training_curves import caption_training_curves, draw_training_curves, finding_training_curves


@dataclass
class TrainingCurvesOptions:
    """Which runs ``training-curves`` reads."""

    checkpoints: list[str]  # run directories (their metrics.jsonl), or sweep folders (every run under them)


OPTIONS = TrainingCurvesOptions


def run_training_curves(
    opts: TrainingCurvesOptions, common: Common, sources: list[Source] | None = None, notes: list[str] | None = None
) -> list[ReportFigure]:
    """The training-curve figure of the runs that have a metrics.jsonl; the others go into ``notes`` (and the log).

    ``sources`` may pass the runs already loaded (the report does), instead of ``opts.checkpoints``.
    """
    sources = sources or load_sources(opts.checkpoints, None, None)
    labels, config_of = default_labels(sources), configurations(sources)
    frames, read, skipped = [], [], []
    for source, label, config in zip(sources, labels, config_of, strict=True):
        path = source.metrics_file
        curves = training_curves(read_jsonl(path), label, config) if path is not None else None
        if curves is None or curves.empty:
            skipped.append(str(source.path))
            continue
        frames.append(curves)
        read.append(source)
    if skipped:
        message = f"No metrics.jsonl rows in {', '.join(skipped)} (not a clipfit-train run directory?): no curves."
        note_left_out(message, notes)
    if not frames:
        if notes is None:
            raise AnalysisError("no metrics.jsonl in the given runs: nothing to draw")
        return []
    curves = pd.concat(frames, ignore_index=True)
    configs = training_curve_configs(curves)
    figure = write_figure(
        OutputDir(common.out, common.argv, "training-curves"),
        "training_curves",
        {"training_curves": curves, "training_curves_configs": configs},
        lambda: draw_training_curves(configs),
        "Training curves: loss and accuracy per step",
        caption_training_curves(configs),
        [s.signature for s in read],
        {"runs": dict(zip(labels, config_of, strict=True)), "skipped": skipped},
        finding=finding_training_curves(configs),
    )
    return [figure]


def execute(opts: TrainingCurvesOptions, common: Common) -> None:
    """Run, then print where the figure went."""
    announce(run_training_curves(opts, common))
