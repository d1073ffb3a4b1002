"""Gradient consistency over training: the cosine between successive gradients of the trained tensors.

Reads GRAD_COS_STEPS and GRAD_COS of :mod:`analysis.schemas`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from figures.style import PAGE_WIDTH, colours, new_figure, require, sequential, styled

TEXT_BIAS = "text FFN-out bias"
MAX_GROUPS = 6  # layer groups drawn over training (a full fine-tune has dozens)
STYLES = ("-", "--", ":", "-.", (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)))


def _runs(part: pd.DataFrame) -> str:
    runs = part["checkpoint"].nunique()
    return f"{runs} seeds" if runs > 1 else "1 run"


def shown_groups(table: pd.DataFrame) -> list[str]:
    """The MAX_GROUPS layer groups drawn and named: those most configurations train first, then in forward order."""
    everything = list(dict.fromkeys(table.sort_values("order")["group"]))
    present = {c: set(part["group"]) for c, part in table.groupby("configuration", sort=False)}
    return sorted(everything, key=lambda g: -sum(g in groups for groups in present.values()))[:MAX_GROUPS]


def group_curves(steps: pd.DataFrame) -> pd.DataFrame:
    """Per configuration, group and step: the mean over the group's tensors, then mean and std over the runs."""
    per_run = steps.groupby(["configuration", "checkpoint", "group", "step"], sort=False)["grad_cos"].mean()
    stats = per_run.groupby(["configuration", "group", "step"], sort=False).agg(["mean", "std"]).reset_index()
    return stats.sort_values(["configuration", "group", "step"], kind="stable")


def draw_grad_cos(steps: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """Left: mean cosine per layer group over training (per configuration, band: std over seeds); middle: the
    text FFN-out biases per block (first configuration, mean over seeds); right: each text bias's mean over
    training, configurations side by side."""
    require(steps, "grad_cos_steps")
    require(summary, "grad_cos")
    configs = list(dict.fromkeys(summary["configuration"]))
    curves = group_curves(steps)
    window = max(1, steps["step"].nunique() // 25)
    everything = list(dict.fromkeys(steps["group"]))
    groups = shown_groups(steps)
    palette = dict(zip(groups, colours(len(groups)), strict=True))
    with styled():
        fig = new_figure(PAGE_WIDTH, 4.2)
        left, middle, right = fig.subplots(1, 3)
        for c, config in enumerate(configs):
            for group in groups:
                line = curves[(curves["configuration"] == config) & (curves["group"] == group)]
                if line.empty:
                    continue
                mean = line["mean"].rolling(window, center=True, min_periods=1).mean()
                std = line["std"].rolling(window, center=True, min_periods=1).mean()
                left.plot(line["step"], mean, color=palette[group], linestyle=STYLES[c % len(STYLES)], linewidth=1)
                if std.notna().any():
                    left.fill_between(line["step"], mean - std, mean + std, color=palette[group], alpha=0.12)
        left.axhline(0, color="#999", linewidth=0.8)
        left.set_xlabel("step")
        left.set_ylabel("cos(g_t, g_{t−1})")
        shown = f" ({len(groups)} of {len(everything)} groups)" if len(groups) < len(everything) else ""
        left.set_title(f"mean over each layer group{shown}")
        handles = [Line2D([], [], color=palette[g], label=g) for g in groups]
        handles += [
            Line2D([], [], color="#444", linestyle=STYLES[c % len(STYLES)], label=config)
            for c, config in enumerate(configs)
        ]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(5, len(handles)))
        text = steps[(steps["group"] == TEXT_BIAS) & (steps["configuration"] == configs[0])]
        blocks = sorted(int(b) for b in text["block"].dropna().unique())
        for block, colour in zip(blocks, sequential(len(blocks)), strict=True):
            line = text[text["block"] == block].groupby("step")["grad_cos"].mean()
            middle.plot(line.index, line.rolling(window, center=True, min_periods=1).mean(), color=colour, label=block)
        middle.axhline(0, color="#999", linewidth=0.8)
        middle.set_xlabel("step")
        middle.set_title(f"{TEXT_BIAS} per block ({configs[0]})" if blocks else "no text FFN-out bias trained")
        if blocks:
            middle.legend(title="block", ncol=2)
        own = summary[summary["group"] == TEXT_BIAS]
        width = 0.8 / max(1, len(configs))
        for c, (config, colour) in enumerate(zip(configs, colours(len(configs)), strict=True)):
            stats = own[own["configuration"] == config].groupby("block")["mean_cos"].agg(["mean", "std"])
            if stats.empty:
                continue
            xs = np.array([int(b) for b in stats.index]) - 0.4 + width * (c + 0.5)
            errors = stats["std"].fillna(0) if stats["std"].notna().any() else None
            right.bar(xs, stats["mean"], width=width, color=colour, yerr=errors, capsize=2, label=config)
        if len(own):
            right.set_xticks(sorted(int(b) for b in own["block"].dropna().unique()))
        right.set_xlabel("block")
        right.set_ylabel("mean cos over training")
        right.set_title(f"{TEXT_BIAS}: mean over training")
        if len(own):
            right.legend()
        fig.suptitle(
            f"Gradient consistency: cosine between successive steps' gradients (smoothed over {window} records)"
        )
    return fig


def caption_grad_cos(summary: pd.DataFrame) -> str:
    """Per configuration: each group's mean cosine (early -> late), and the text biases' block with the highest."""
    parts = []
    named = shown_groups(summary)
    for config in dict.fromkeys(summary["configuration"]):
        own = summary[summary["configuration"] == config]
        groups = own.groupby("group", sort=False)[["mean_cos", "early_cos", "late_cos", "positive_share"]].mean()
        others = len(groups) - len(groups.index.intersection(named))
        groups = groups[groups.index.isin(named)]
        text = ", ".join(
            f"{g} {r['mean_cos']:.2f} ({r['early_cos']:.2f} early → {r['late_cos']:.2f} late, "
            f"{r['positive_share']:.0%} positive)"
            for g, r in groups.iterrows()
        )
        sentence = f"{config} ({_runs(own)}): {text}" + (f" (+{others} groups in grad_cos.csv)" if others else "")
        bias = own[own["group"] == TEXT_BIAS].groupby("block")["mean_cos"].mean()
        if len(bias) > 1:
            sentence += (
                f"; among the text biases block {int(bias.idxmax())} is the most consistent ({bias.max():.2f}) and "
                f"block {int(bias.idxmin())} the least ({bias.min():.2f})"
            )
        parts.append(sentence)
    return "Cosine between successive steps' gradients of each trained tensor (1 = the same direction), mean over " + (
        "training: " + "; ".join(parts) + "."
    )


def finding_grad_cos(summary: pd.DataFrame) -> str:
    """The headline: per layer group of the first configuration, the mean cosine, early and late."""
    config = summary["configuration"].iloc[0]
    own = summary[summary["configuration"] == config]
    groups = own.groupby("group", sort=False)[["mean_cos", "early_cos", "late_cos"]].mean()
    items = [f"{g} {r['mean_cos']:.2f} ({r['early_cos']:.2f} → {r['late_cos']:.2f})" for g, r in groups.iterrows()]
    return f"Gradient consistency ({config}): mean cos of successive gradients, early → late: " + "; ".join(items) + "."
