"""``clipfit-analyze param-change``: per-layer change of each checkpoint (paper Fig. 3; Fig. 4 right).

The table is :func:`analysis.param_change.param_change` (sq_change = ||theta1 - theta0||_2^2 per
trained tensor, with L2 and relative change beside it); two checkpoints trained with different
regulariser weights (lambda = 8 and 0) give Fig. 4 right. Runs with a ``layers.jsonl`` add the
change over training steps.

Several runs: the seeds of one configuration are aggregated (mean, std as error bars) and
configurations drawn side by side, per tensor and per layer group or module family, absolute and per
value (:func:`analysis.param_change.group_change`); two configurations that differ only in lambda
get Fig. 4 right of their own. ``--weights ARCH:A ARCH:B`` compares every parameter of two weight
files; a change not confined to a few layer groups is also placed in depth by module family.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.commands.bundle import announce, write_figure
from analysis.commands.common import Common, load_sources
from analysis.configs import differing_only
from analysis.errors import AnalysisError
from analysis.outputs import OutputDir
from analysis.param_change import (
    change_over_steps,
    combine,
    configuration_change,
    family_depth,
    group_change,
    group_summary,
    param_change,
)
from analysis.sources import Source, configurations, default_labels
from clipfit.rundir import RESULT_NEUTRAL, read_jsonl
from figures.compare import (
    MAX_GROUP_ROWS,
    caption_family_depth,
    caption_group_change,
    caption_param_configs,
    draw_family_depth,
    draw_group_change,
    draw_param_configs,
    finding_group_change,
    finding_lambda,
)
from figures.param_change import (
    AXIS,
    caption_param_change,
    caption_param_steps,
    draw_param_change,
    draw_param_steps,
    finding_param_change,
)
from figures.report import ReportFigure

MEASURES = ("sq_change", "l2_change", "rel_change")


@dataclass
class ParamChangeOptions:
    """What ``param-change`` compares and plots."""

    checkpoints: list[str]  # run directories, checkpoint files or original CLIPFit checkpoints
    weights: list[str] | None = None  # ARCH:FILE_A ARCH:FILE_B: every parameter of two weight files compared
    labels: list[str] | None = None  # one label per checkpoint, each drawn on its own (default: seeds pooled)
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
    sources = sources or load_sources(opts.checkpoints, opts.weights, opts.pretrained, opts.recipe)
    labels = opts.labels or default_labels(sources)
    if len(labels) != len(sources):
        raise AnalysisError(f"{len(labels)} labels for {len(sources)} checkpoints; give one label per checkpoint")
    named = list(zip(sources, labels, strict=True))
    table = combine(param_change(s.ckpt.init, s.ckpt.final, label) for s, label in named)
    out = OutputDir(common.out, common.argv, "param-change")
    config_of = list(labels) if opts.labels else configurations(sources)  # given labels: each run on its own
    configs = configuration_change(table, dict(zip(labels, config_of, strict=True)), _seeds(sources, labels))
    seeds_pooled = len(set(config_of)) < len(sources)
    only_lambda = len(set(config_of)) == 2 and len(differing_only([s.settings for s in sources], LAMBDA, NEUTRAL)) > 0
    if only_lambda:  # λ = 8 before λ = 0, as the paper draws them
        weight = {c: s.reg_weight or 0.0 for s, c in zip(sources, config_of, strict=True)}
        configs = configs.sort_values("configuration", key=lambda c: -c.map(weight), kind="stable")
    title = "Per-layer parameter change (paper Fig. 3)"
    if only_lambda or (len(sources) == 2 and len({s.reg_weight for s in sources}) > 1):
        title = "Per-layer parameter change with different regulariser weights (paper Fig. 4 right)"
    elif len(sources) > 1:
        title += ", seeds pooled, configurations side by side" if seeds_pooled else ", checkpoints side by side"
    summary = {
        "checkpoints": {label: str(s.path) for s, label in named},
        "configurations": dict(zip(labels, config_of, strict=True)),
        "groups": group_summary(table).to_dict("records"),
        "notes": [n for s in sources for n in s.notes],
    }
    signatures = [s.signature for s in sources]
    if seeds_pooled:  # the figure draws the mean over seeds; param_change.csv keeps every run
        tables = {"param_change": table, "param_change_configs": configs}
        caption = caption_param_configs(configs, opts.measure)
        draw = lambda: draw_param_configs(configs, opts.measure, AXIS[opts.measure])  # noqa: E731
    else:
        tables, caption = table, caption_param_change(table, opts.measure)
        draw = lambda: draw_param_change(table, opts.measure)  # noqa: E731
    finding = finding_lambda(configs) if only_lambda else finding_param_change(table, opts.measure)
    figures = [write_figure(out, "param_change", tables, draw, title, caption, signatures, summary, finding=finding)]
    figures += _comparisons(table, configs, sources, labels, config_of, out, only_lambda)
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


LAMBDA = ("optim", "reg_weight")
NEUTRAL = set(RESULT_NEUTRAL)


def _seeds(sources: list[Source], labels: list[str]) -> dict[str, object]:
    return {label: s.ckpt.meta.get("seed") for s, label in zip(sources, labels, strict=True)}


def _comparisons(
    table: pd.DataFrame,
    configs: pd.DataFrame,
    sources: list[Source],
    labels: list[str],
    config_of: list[str],
    out: OutputDir,
    only_lambda: bool,
) -> list[ReportFigure]:
    """The figures beyond per-tensor bars: per group / family on one scale (several runs, or a change spread
    over many groups), Fig. 4 right of a lambda pair among other configurations, and the change in depth."""
    figures = []
    signatures = [s.signature for s in sources]
    groups_of = table.groupby("checkpoint", sort=False)["group"].nunique()
    spread = groups_of.max() > MAX_GROUP_ROWS
    if len(sources) > 1 or spread:
        groups = group_change(table, dict(zip(labels, config_of, strict=True)), _seeds(sources, labels))
        figures.append(
            write_figure(
                out,
                "param_change_groups",
                groups,
                lambda: draw_group_change(groups),
                "Change per layer group, configurations on one scale (absolute and per value)",
                caption_group_change(groups),
                signatures,
                {"configurations": sorted(set(config_of))},
                finding=finding_group_change(groups),
            )
        )
    pairs = differing_only([s.settings for s in sources], LAMBDA, NEUTRAL)
    if pairs and not only_lambda:
        i, j = sorted(pairs[0], key=lambda k: -(sources[k].reg_weight or 0))  # λ = 8 first, as in the paper
        pair = [config_of[i], config_of[j]]
        chosen = pd.concat([configs[configs["configuration"] == c] for c in pair], ignore_index=True)
        weights = {config_of[i]: sources[i].reg_weight, config_of[j]: sources[j].reg_weight}
        figures.append(
            write_figure(
                out,
                "param_change_lambda",
                chosen,
                lambda: draw_param_configs(chosen),
                "Per-layer change with and without the regulariser (paper Fig. 4 right)",
                caption_param_configs(chosen),
                signatures,
                {"reg_weights": weights},
                finding=finding_lambda(chosen),
            )
        )
    if spread:
        widest = groups_of[groups_of > MAX_GROUP_ROWS].index[0]  # the first run whose change is spread
        families = family_depth(table[table["checkpoint"] == widest])
        figures.append(
            write_figure(
                out,
                "param_change_families",
                families,
                lambda: draw_family_depth(families),
                "Where in depth each module family moved",
                caption_family_depth(families),
                signatures[:1],
            )
        )
    return figures
