"""``clipfit-analyze grad-cos``: gradient consistency over training, from the runs' layers.jsonl.

grad_cos_t(theta) = <g_t, g_{t-1}> / (||g_t|| ||g_{t-1}||) for every trained tensor at every logged step
(logged by clipfit's trainer; see :mod:`analysis.grad_cos`): per layer group over training, the text biases
per block, and each tensor's mean, early and late value. Runs written before clipfit logged it have none:
they are named and skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.commands.bundle import announce, note_left_out, write_figure
from analysis.commands.common import Common, load_sources
from analysis.errors import AnalysisError
from analysis.grad_cos import grad_cos_steps, grad_cos_summary, has_grad_cos
from analysis.outputs import OutputDir
from analysis.sources import Source, configurations, default_labels
from clipfit.rundir import read_jsonl
from figures.grad_cos import caption_grad_cos, draw_grad_cos, finding_grad_cos
from figures.report import ReportFigure


@dataclass
class GradCosOptions:
    """Which runs ``grad-cos`` reads."""

    checkpoints: list[str]  # run directories (their layers.jsonl)


OPTIONS = GradCosOptions


def run_grad_cos(
    opts: GradCosOptions, common: Common, sources: list[Source] | None = None, notes: list[str] | None = None
) -> list[ReportFigure]:
    """The grad-cos figure of the runs that logged it; the others go into ``notes`` (and the log)."""
    sources = sources or load_sources(opts.checkpoints, None, None)
    labels, config_of = default_labels(sources), configurations(sources)
    frames, skipped = [], []
    for source, label, config in zip(sources, labels, config_of, strict=True):
        records = read_jsonl(source.layers_file) if source.layers_file is not None else []
        if not has_grad_cos(records):
            skipped.append(str(source.path))
            continue
        frames.append(grad_cos_steps(records, label, config))
    if skipped:
        message = (
            f"No grad_cos in the layers.jsonl of {', '.join(skipped)} (runs written before clipfit logged it, or "
            "no run directory): no gradient-consistency curves for them."
        )
        note_left_out(message, notes)
    if not frames:
        if notes is None and not opts.checkpoints:
            raise AnalysisError("nothing to analyse: give run directories")
        return []
    steps = pd.concat(frames, ignore_index=True)
    summary = grad_cos_summary(steps)
    logged = [s for s in sources if str(s.path) not in skipped]
    figure = write_figure(
        OutputDir(common.out, common.argv, "grad-cos"),
        "grad_cos",
        {"grad_cos": summary, "grad_cos_steps": steps},
        lambda: draw_grad_cos(steps, summary),
        "Gradient consistency: cosine between successive gradients during training",
        caption_grad_cos(summary),
        [s.signature for s in logged],
        {"runs": dict(zip(labels, config_of, strict=True)), "skipped": skipped},
        finding=finding_grad_cos(summary),
    )
    return [figure]


def execute(opts: GradCosOptions, common: Common) -> None:
    """Run, then print where the figure went (nothing, with a warning, when no run logged grad_cos)."""
    announce(run_grad_cos(opts, common))
