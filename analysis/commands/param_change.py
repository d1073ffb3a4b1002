"""``clipfit-analyze param-change``: per-layer change of each checkpoint (paper Fig. 3; Fig. 4 right).

The table is :func:`analysis.param_change.param_change` (sq_change = ||theta1 - theta0||_2^2 per
trained tensor, with L2 and relative change beside it); two checkpoints trained with different
regulariser weights (lambda = 8 and 0) give Fig. 4 right. Runs with a ``layers.jsonl`` add the
change over training steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.commands.bundle import announce, write_figure
from analysis.commands.common import Common
from analysis.errors import AnalysisError
from analysis.outputs import OutputDir
from analysis.param_change import change_over_steps, combine, group_summary, param_change
from analysis.sources import Source, default_labels, load_source
from clipfit.rundir import read_jsonl
from figures.param_change import caption_param_change, caption_param_steps, draw_param_change, draw_param_steps
from figures.report import ReportFigure

MEASURES = ("sq_change", "l2_change", "rel_change")


@dataclass
class ParamChangeOptions:
    """What ``param-change`` compares and plots."""

    checkpoints: list[str]  # run directories, checkpoint files or original CLIPFit checkpoints
    labels: list[str] | None = None  # one label per checkpoint (default: recipe, λ, or differing path parts)
    pretrained: str | None = None  # MODEL:SOURCE, reference values of original CLIPFit checkpoints
    recipe: str = "clipfit"  # tensors an original CLIPFit run trained
    measure: str = "sq_change"  # plotted measure: sq_change, l2_change or rel_change


OPTIONS = ParamChangeOptions


def run_param_change(
    opts: ParamChangeOptions, common: Common, sources: list[Source] | None = None
) -> list[ReportFigure]:
    """Per-layer change of each checkpoint (Fig. 3; Fig. 4 right for a λ = 8 / λ = 0 pair).

    ``sources`` may pass the checkpoints already loaded (the report does), instead of ``opts.checkpoints``.
    """
    if opts.measure not in MEASURES:
        raise AnalysisError(f"unknown measure '{opts.measure}'; choose sq_change, l2_change or rel_change")
    sources = sources or [load_source(p, opts.pretrained, opts.recipe) for p in opts.checkpoints]
    labels = opts.labels or default_labels(sources)
    if len(labels) != len(sources):
        raise AnalysisError(f"{len(labels)} labels for {len(sources)} checkpoints; give one label per checkpoint")
    named = list(zip(sources, labels, strict=True))
    table = combine(param_change(s.ckpt.init, s.ckpt.final, label) for s, label in named)
    out = OutputDir(common.out, common.argv, "param-change")
    title = "Per-layer parameter change (paper Fig. 3)"
    if len({s.reg_weight for s in sources}) > 1:
        title = "Per-layer parameter change with different regulariser weights (paper Fig. 4 right)"
    elif len(sources) > 1:
        title += ", checkpoints side by side"
    summary = {
        "checkpoints": {label: str(s.path) for s, label in named},
        "groups": group_summary(table).to_dict("records"),
        "notes": [n for s in sources for n in s.notes],
    }
    figures = [
        write_figure(
            out,
            "param_change",
            table,
            lambda: draw_param_change(table, opts.measure),
            title,
            caption_param_change(table, opts.measure),
            [s.signature for s in sources],
            summary,
        )
    ]
    logs = [(s, label) for s, label in named if s.layers_file is not None]
    if logs:
        steps = pd.concat([change_over_steps(read_jsonl(s.layers_file), label) for s, label in logs], ignore_index=True)
        if not steps.empty:
            figures.append(
                write_figure(
                    out,
                    "param_change_steps",
                    steps,
                    lambda: draw_param_steps(steps),
                    "Parameter change during training",
                    caption_param_steps(steps),
                    [s.signature for s, _ in logs],
                )
            )
    return figures


def execute(opts: ParamChangeOptions, common: Common) -> None:
    """Run, then print where the figures went."""
    announce(run_param_change(opts, common))
