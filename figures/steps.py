"""Per-step curves of every trained tensor, one panel per layer group (from a run's layers.jsonl).

Shared by the parameter-change and gradient figures; reads PARAM_STEPS or GRAD_STEPS columns.
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

from figures.style import PAGE_WIDTH, log_axis, new_figure, sequential, styled

_LINESTYLES = ("-", "--", ":", "-.")


def draw_step_curves(
    table: pd.DataFrame, value: str, ylabel: str, title: str, log: bool = False, smooth: bool = False
) -> Figure:
    """Lines of ``value`` against step for each tensor; colour = position (dark = early), line style =
    checkpoint when there are several. ``smooth`` draws a centred moving average over about 4% of
    the records (per-step gradients are noisy); the CSV keeps the raw values."""
    window = max(1, table["step"].nunique() // 25) if smooth else 1
    groups = list(dict.fromkeys(table.sort_values("order")["group"]))
    checkpoints = list(dict.fromkeys(table["checkpoint"]))
    cols = min(3, max(1, len(groups)))
    rows = math.ceil(len(groups) / cols)
    with styled():
        fig = new_figure(PAGE_WIDTH * cols / 3, 3.5 * rows + 0.4)
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax, group in zip(axes.flat, groups, strict=False):
            part = table[table["group"] == group]
            positions = list(dict.fromkeys(part.sort_values("order")["position"]))
            palette = dict(zip(positions, sequential(len(positions)), strict=True))
            for c, checkpoint in enumerate(checkpoints):
                for position in positions:
                    line = part[(part["checkpoint"] == checkpoint) & (part["position"] == position)].sort_values("step")
                    if line.empty:
                        continue
                    ax.plot(
                        line["step"],
                        line[value].rolling(window, center=True, min_periods=1).mean(),
                        color=palette[position],
                        linestyle=_LINESTYLES[c % len(_LINESTYLES)],
                        linewidth=1.2,
                        label=position if c == 0 else None,
                    )
            if log:
                log_axis(ax)
            ax.set_title(group)
            ax.set_xlabel("step")
            ax.set_ylabel(ylabel)
            if len(positions) <= 14 and ax.get_legend_handles_labels()[0]:
                ax.legend(ncol=2 if len(positions) > 7 else 1, loc="best")
        for ax in list(axes.flat)[len(groups) :]:
            ax.set_visible(False)
        suffix = ""
        if len(checkpoints) > 1:
            suffix = " (" + ", ".join(f"{_LINESTYLES[i % 4]} {c}" for i, c in enumerate(checkpoints)) + ")"
        smoothing = f", moving average over {window} records" if window > 1 else ""
        fig.suptitle(title + suffix + smoothing)
    return fig
