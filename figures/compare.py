"""Runs compared: configurations side by side on a common scale, seeds as error bars.

Reads PARAM_CONFIGS (per tensor, mean and std over seeds), PARAM_GROUPS (per layer group or module
family, summed and per value) and PARAM_FAMILIES (a whole-model change in depth) of :mod:`analysis.schemas`.
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

from figures.paper import PAPER_FINDING, against_paper
from figures.positions import draw_position_bars
from figures.style import PAGE_WIDTH, colours, log_axis, new_figure, require, styled

MAX_GROUP_ROWS = 12  # groups drawn per panel before the comparison falls back to module families


def runs_label(runs: int, seeds: str) -> str:
    """ "3 seeds (1,2,3)" or "1 run"."""
    if runs > 1:
        return f"{runs} seeds ({seeds})" if seeds and "?" not in seeds else f"{runs} runs"
    return "1 run"


def _configs(table: pd.DataFrame) -> dict[str, str]:
    """configuration -> "label (3 seeds)" in first-seen order."""
    first = table.drop_duplicates("configuration")
    return {
        c: f"{c} ({runs_label(int(r), str(s))})"
        for c, r, s in zip(first["configuration"], first["runs"], first["seeds"], strict=True)
    }


def _fmt(value: float) -> str:
    return "nan" if value != value else f"{value:.3g}"


def _pm(mean: float, std: float) -> str:
    return _fmt(mean) if std != std else f"{_fmt(mean)} ± {_fmt(std)}"


def draw_param_configs(table: pd.DataFrame, measure: str = "sq_change", axis: str = "squared L2 change") -> Figure:
    """Per-position bars of each configuration's mean ``measure`` over its seeds, the std as error bars."""
    require(table, "param_change_configs")
    frame = table.copy()
    names = _configs(frame)
    frame["series"] = frame["configuration"].map(names)
    title = f"Per-layer change, mean over seeds (error bars: std): {axis}"
    return draw_position_bars(frame, f"{measure}_mean", axis, title, series="series", error=f"{measure}_std")


def caption_param_configs(table: pd.DataFrame, measure: str = "sq_change") -> str:
    """Per configuration (with its seed count): the tensor that moved most and the total; then each configuration
    against the paper's finding (:mod:`figures.paper`)."""
    parts, against = [], []
    for config, label in _configs(table).items():
        own = table[table["configuration"] == config]
        top = own.loc[own[f"{measure}_mean"].idxmax()]
        total = own[f"{measure}_mean"].sum()
        parts.append(
            f"{label}: most at {top['group']} {top['position']} ({_pm(top[f'{measure}_mean'], top[f'{measure}_std'])}),"
            f" summed {_fmt(total)}"
        )
        clauses = against_paper(own, f"{measure}_mean")
        against += [f"{config}: {clauses}"] if clauses else []
    sentence = f"Per-layer {measure.replace('_', ' ')}, mean ± sample std over the seeds of each configuration; "
    sentence += "; ".join(parts) + "."
    return sentence + (
        f" Against the paper's finding that {PAPER_FINDING}: " + "; ".join(against) + "." if against else ""
    )


def group_level(table: pd.DataFrame) -> str:
    """``group`` while the configurations have at most MAX_GROUP_ROWS layer groups, else ``family``."""
    groups = table[table["level"] == "group"]["group"].nunique()
    return "group" if groups <= MAX_GROUP_ROWS else "family"


def draw_group_change(table: pd.DataFrame) -> Figure:
    """Left: summed squared change per layer group (or module family); right: per value; bars per
    configuration (mean over seeds, std as error bars), log scale."""
    require(table, "param_change_groups")
    level = group_level(table)
    part = table[table["level"] == level]
    groups = list(dict.fromkeys(part["group"]))
    names = _configs(part)
    palette = dict(zip(names, colours(len(names)), strict=True))
    height = 0.8 / len(names)
    with styled():
        fig = new_figure(PAGE_WIDTH, max(3.0, 0.14 * len(groups) * len(names) + 1.8))
        axes = fig.subplots(1, 2, sharey=True)
        for ax, value, xlabel in (
            (axes[0], "sq_change", "Σ ||θ−θ₀||² over the group"),
            (axes[1], "per_value", "Σ ||θ−θ₀||² / values in the group"),
        ):
            for c, (config, name) in enumerate(names.items()):
                own = part[part["configuration"] == config].set_index("group")
                ys = [i - 0.4 + height * (c + 0.5) for i in range(len(groups))]
                means = [own[f"{value}_mean"].get(g, math.nan) for g in groups]
                stds = [own[f"{value}_std"].get(g, math.nan) for g in groups]
                errors = None if all(s != s for s in stds) else [0.0 if s != s else s for s in stds]
                ax.barh(ys, means, height=height, color=palette[config], label=name, xerr=errors, capsize=2)
            log_axis(ax, "x")
            ax.set_xlabel(xlabel)
        axes[0].set_yticks(range(len(groups)), groups)
        axes[0].invert_yaxis()
        axes[0].set_title("absolute")
        axes[1].set_title("normalised by the group's size")
        handles, legend = axes[0].get_legend_handles_labels()
        fig.legend(handles, legend, loc="outside lower center", ncol=min(3, len(names)))
        what = "layer group" if level == "group" else "module family"
        fig.suptitle(f"Change per {what}, configurations on one scale (mean over seeds, error bars: std)")
    return fig


def caption_group_change(table: pd.DataFrame) -> str:
    """Per configuration: values it changed, total squared change and per value, and where per value is largest."""
    level = group_level(table)
    part = table[table["level"] == level]
    parts = []
    totals = {}
    for config, label in _configs(part).items():
        own = part[part["configuration"] == config]
        numel = own["numel"].sum()
        total = own["sq_change_mean"].sum()
        totals[config] = (total, total / numel if numel else math.nan)
        top = own.loc[own["per_value_mean"].idxmax()]
        parts.append(
            f"{label} changed {int(numel):,d} values by {_fmt(total)} in total ({_fmt(totals[config][1])} per value), "
            f"most per value in {top['group']} ({_pm(top['per_value_mean'], top['per_value_std'])})"
        )
    sentence = "Summed squared change and change per value of each " + (
        "layer group: " if level == "group" else "module family (tower + attention/FFN/LN/embedding/projection): "
    )
    sentence += "; ".join(parts)
    if len(totals) > 1:
        (a, (ta, pa)), (b, (tb, pb)) = list(totals.items())[:2]
        if ta > 0 and pa > 0:
            sentence += f"; {b} against {a}: {tb / ta:.2g}× the total, {pb / pa:.2g}× per value"
    return sentence + "."


def draw_family_depth(table: pd.DataFrame) -> Figure:
    """Squared change per value of each module family along the depth of each tower (first checkpoint)."""
    require(table, "param_change_families")
    checkpoint = table["checkpoint"].iloc[0]
    own = table[table["checkpoint"] == checkpoint]
    towers = list(dict.fromkeys(own["tower"]))
    everything = list(dict.fromkeys(own.sort_values("order")["family"]))
    palette = dict(zip(everything, colours(len(everything)), strict=True))  # one colour per family in both towers
    with styled():
        fig = new_figure(min(PAGE_WIDTH, 4.6 * len(towers) + 0.5), 3.8)
        axes = fig.subplots(1, len(towers), squeeze=False, sharey=True)[0]
        for ax, tower in zip(axes, towers, strict=True):
            part = own[own["tower"] == tower]
            families = list(dict.fromkeys(part.sort_values("order")["family"]))
            ticks = part.drop_duplicates("order").sort_values("order")
            for family in families:
                line = part[part["family"] == family].sort_values("order")
                ax.plot(line["order"], line["per_value"], marker="o", markersize=3, label=family, color=palette[family])
            ax.set_xticks(ticks["order"], ticks["position"], rotation=90 if len(ticks) > 14 else 0)
            log_axis(ax)
            ax.set_title(f"{tower} tower")
            ax.set_xlabel("position (pre, block, post)")
            ax.legend(ncol=2)
        axes[0].set_ylabel("Σ ||θ−θ₀||² per value")
        fig.suptitle(f"Where in depth each module family moved ({checkpoint})")
    return fig


def caption_family_depth(table: pd.DataFrame) -> str:
    """Per tower: the family and position with the largest change per value, and the family with the largest total."""
    checkpoint = table["checkpoint"].iloc[0]
    own = table[table["checkpoint"] == checkpoint]
    parts = []
    for tower in dict.fromkeys(own["tower"]):
        part = own[own["tower"] == tower]
        top = part.loc[part["per_value"].idxmax()]
        families = part.groupby("family")["sq_change"].sum()
        share = families.max() / families.sum() if families.sum() > 0 else math.nan
        parts.append(
            f"{tower}: most per value in {top['family']} at {top['position']} ({_fmt(top['per_value'])}), "
            f"most in total {families.idxmax()} ({share:.0%} of the tower's change)"
        )
    return f"Change per value by module family and depth ({checkpoint}); " + "; ".join(parts) + "."


def finding_group_change(table: pd.DataFrame) -> str:
    """The headline: each configuration's values changed, in total and per value (the first four)."""
    part = table[table["level"] == group_level(table)]
    items = []
    for config in list(dict.fromkeys(part["configuration"]))[:4]:
        own = part[part["configuration"] == config]
        numel, total = own["numel"].sum(), own["sq_change_mean"].sum()
        items.append(f"{config} {int(numel):,d} values, Σ‖θ−θ₀‖² {_fmt(total)} ({_fmt(total / numel)} per value)")
    return "Change on one scale: " + "; ".join(items) + "."


def finding_lambda(table: pd.DataFrame) -> str:
    """The headline of Fig. 4 right: each layer group's summed change under the two configurations, and the ratio."""
    configs = list(dict.fromkeys(table["configuration"]))[:2]
    if len(configs) < 2:
        return ""
    sums = table.groupby(["configuration", "group"], sort=False)["sq_change_mean"].sum()
    groups = list(dict.fromkeys(table["group"]))
    items = []
    for group in groups:
        a, b = sums.get((configs[0], group), math.nan), sums.get((configs[1], group), math.nan)
        ratio = f" ({a / b:.2f}×)" if b and b == b and a == a else ""
        items.append(f"{group} {_fmt(a)} vs {_fmt(b)}{ratio}")
    return f"Fig. 4 right, {configs[0]} against {configs[1]} (summed squared change): " + "; ".join(items) + "."
