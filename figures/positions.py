"""Bars of one number per trained tensor, by layer position, one panel per layer group.

The layout of the paper's per-layer figures (Fig. 3, Fig. 4): text FFN-out biases by block, image
LayerNorm weights and biases by position; one colour per checkpoint when several are compared.
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

from figures.style import PAGE_WIDTH, colours, log_axis, new_figure, short_positions, styled

MAX_GROUPS = 12  # panels at most (a full fine-tune has dozens of layer groups)


def draw_position_bars(
    table: pd.DataFrame,
    column: str,
    axis: str,
    title: str,
    log: bool = False,
    series: str = "checkpoint",
    error: str | None = None,
    max_groups: int = MAX_GROUPS,
) -> Figure:
    """``column`` per position (LAYER columns: group, position, order; and ``series``) as grouped bars.

    ``error`` names a column of error-bar half-widths (a std over seeds). With more than ``max_groups``
    layer groups (a full fine-tune), only the ``max_groups`` groups with the largest summed ``column``
    are drawn and the title says so; the CSV keeps every group.
    """
    groups = list(dict.fromkeys(table.sort_values("order")["group"]))
    if len(groups) > max_groups:
        totals = table.groupby("group")[column].sum().sort_values(ascending=False)
        kept = set(totals.index[:max_groups])
        title += f" ({max_groups} of {len(groups)} layer groups, the most changed; all in the CSV)"
        groups = [g for g in groups if g in kept]
    checkpoints = list(dict.fromkeys(table[series]))
    palette = dict(zip(checkpoints, colours(len(checkpoints)), strict=True))
    cols = min(3, max(1, len(groups)))
    rows = math.ceil(len(groups) / cols)
    with styled():
        fig = new_figure(PAGE_WIDTH * cols / 3, 3.2 * rows + 0.4)
        axes = fig.subplots(rows, cols, squeeze=False)
        width = 0.8 / len(checkpoints)
        for ax, group in zip(axes.flat, groups, strict=False):
            part = table[table["group"] == group]
            positions = list(dict.fromkeys(part.sort_values("order")["position"]))
            labels, xlabel = short_positions(positions)
            for c, checkpoint in enumerate(checkpoints):
                own = part[part[series] == checkpoint].set_index("position")
                xs = [i - 0.4 + width * (c + 0.5) for i in range(len(positions))]
                errors = None
                if error is not None:
                    errors = [own[error].get(p, math.nan) for p in positions]
                    errors = None if all(e != e for e in errors) else [0.0 if e != e else e for e in errors]
                ax.bar(
                    xs,
                    [own[column].get(p, math.nan) for p in positions],
                    width=width,
                    color=palette[checkpoint],
                    label=checkpoint,
                    yerr=errors,
                    capsize=2 if errors else 0,
                    error_kw={"linewidth": 0.8},
                )
            ax.set_xticks(range(len(positions)), labels, rotation=90 if len(positions) > 8 else 0)
            ax.set_title(group)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(axis)
            if log:
                log_axis(ax)
            if len(checkpoints) > 1 and ax is axes.flat[0]:
                ax.legend()
        for ax in list(axes.flat)[len(groups) :]:
            ax.set_visible(False)
        fig.suptitle(title)
    return fig
