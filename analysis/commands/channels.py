"""``clipfit-analyze channels``: how the change of each 1-D tensor (LayerNorm gains and biases, biases) spreads
over its channels, and which channels moved most.

From the checkpoints alone (see :mod:`analysis.channels`): per tensor the share of its squared change in the
top 1% and 10% of its channels and a Gini coefficient; per channel d_i = theta1_i - theta0_i, ranked.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.channels import channel_tables, vector_names
from analysis.commands.bundle import announce, note_left_out, write_figure
from analysis.commands.common import Common, load_sources
from analysis.errors import AnalysisError
from analysis.outputs import OutputDir
from analysis.sources import Source, configurations, default_labels
from figures.channels import caption_channels, draw_channels, finding_channels
from figures.report import ReportFigure


@dataclass
class ChannelsOptions:
    """Which checkpoints ``channels`` reads."""

    checkpoints: list[str]  # run directories, checkpoint files or original CLIPFit checkpoints
    weights: list[str] | None = None  # ARCH:FILE_A ARCH:FILE_B: two weight files
    pretrained: str | None = None  # MODEL:SOURCE (required for original CLIPFit checkpoints)
    recipe: str = "clipfit"  # tensors an original CLIPFit run trained
    max_tensors: int | None = 16  # tensors whose every channel goes into channels.csv (the most changed); 0: all


OPTIONS = ChannelsOptions


def run_channels(
    opts: ChannelsOptions, common: Common, sources: list[Source] | None = None, notes: list[str] | None = None
) -> list[ReportFigure]:
    """Channel concentration of every checkpoint, and the channels that moved most.

    Checkpoints that trained no 1-D tensor (CoOp's and KgCoOp's context, CLIP-Adapter's adapter matrices) have
    no channels: they are named in ``notes`` (and the log) and left out; with ``notes`` None (the sub-command)
    and none left, that is an error.
    """
    sources = sources or load_sources(opts.checkpoints, opts.weights, opts.pretrained, opts.recipe)
    labels, config_of = default_labels(sources), configurations(sources)  # over all: the labels other sections use
    kept = [i for i, s in enumerate(sources) if vector_names(s.ckpt.final)]
    skipped = [str(s.path) for i, s in enumerate(sources) if i not in kept]
    if skipped:
        message = (
            f"No 1-D tensor (LayerNorm gain or bias, bias vector) among the trained tensors of {', '.join(skipped)} "
            "(e.g. a prompt context or adapter matrices): no channels for them."
        )
        note_left_out(message, notes)
    if not kept:
        if notes is None:
            raise AnalysisError("no 1-D tensors (LayerNorm gains and biases, biases) among the compared tensors")
        return []
    sources, labels, config_of = ([seq[i] for i in kept] for seq in (sources, labels, config_of))
    pairs = [
        channel_tables(s.ckpt.init, s.ckpt.final, label, config, opts.max_tensors or None)
        for s, label, config in zip(sources, labels, config_of, strict=True)
    ]
    channels = pd.concat([c for c, _ in pairs], ignore_index=True)
    concentration = pd.concat([s for _, s in pairs], ignore_index=True)
    top = concentration.sort_values("sq_change", ascending=False).groupby("checkpoint", sort=False).head(5)
    summary = {
        "runs": dict(zip(labels, config_of, strict=True)),
        "max_tensors": opts.max_tensors,
        "most_changed": top[
            ["checkpoint", "name", "top1_share", "top10_share", "gini", "top_channel", "top_change"]
        ].to_dict("records"),
    }
    figure = write_figure(
        OutputDir(common.out, common.argv, "channels"),
        "channels",
        {"channels": channels, "channel_concentration": concentration},
        lambda: draw_channels(channels, concentration),
        "Channels: how concentrated the change of each tensor is, and the channels that moved most",
        caption_channels(channels, concentration),
        [s.signature for s in sources],
        summary,
        finding=finding_channels(concentration),
    )
    return [figure]


def execute(opts: ChannelsOptions, common: Common) -> None:
    """Run, then print where the figure went."""
    announce(run_channels(opts, common))
