"""Bars of one number per trained tensor, by layer position, one panel per layer group.

The layout of the paper's per-layer figures (Fig. 3, Fig. 4): text FFN-out biases by block, image
LayerNorm weights and biases by position; one colour per checkpoint when several are compared.
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

from figures.style import colours, new_figure, short_positions, styled


def draw_position_bars(table: pd.DataFrame, column: str, axis: str, title: str, log: bool = False) -> Figure:
    """``column`` per position (LAYER columns: group, position, order; and checkpoint) as grouped bars."""
    groups = list(dict.fromkeys(table.sort_values("order")["group"]))
    checkpoints = list(dict.fromkeys(table["checkpoint"]))
    palette = dict(zip(checkpoints, colours(len(checkpoints)), strict=True))
    cols = min(3, max(1, len(groups)))
    rows = math.ceil(len(groups) / cols)
    with styled():
        fig = new_figure(4.3 * cols, 3.2 * rows + 0.4)
        axes = fig.subplots(rows, cols, squeeze=False)
        width = 0.8 / len(checkpoints)
        for ax, group in zip(axes.flat, groups, strict=False):
            part = table[table["group"] == group]
            positions = list(dict.fromkeys(part.sort_values("order")["position"]))
            labels, xlabel = short_positions(positions)
            for c, checkpoint in enumerate(checkpoints):
                values = part[part["checkpoint"] == checkpoint].set_index("position")[column]
                xs = [i - 0.4 + width * (c + 0.5) for i in range(len(positions))]
                ax.bar(
                    xs,
                    [values.get(p, math.nan) for p in positions],
                    width=width,
                    color=palette[checkpoint],
                    label=checkpoint,
                )
            ax.set_xticks(range(len(positions)), labels, rotation=90 if len(positions) > 8 else 0)
            ax.set_title(group)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(axis)
            if log:
                ax.set_yscale("log")
            if len(checkpoints) > 1:
                ax.legend()
        for ax in list(axes.flat)[len(groups) :]:
            ax.set_visible(False)
        fig.suptitle(title)
    return fig
