"""How much each block's representation moved: linear CKA, pretrained against fine-tuned.

Reads the REP_CHANGE table of :mod:`analysis.schemas`.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from figures.style import colours, log_axis, new_figure, require, styled

FLOOR = 1e-12  # 1 - CKA below this (float rounding of "unchanged") is drawn at the floor of the log axis


def draw_rep_change(table: pd.DataFrame) -> Figure:
    """1 - CKA per block on a log scale (higher = moved more), one panel per tower, blocks in forward
    order, then the output feature. Fine-tuning a few tensors keeps CKA close to 1, so its
    complement on a log axis is what shows which blocks moved."""
    require(table, "rep_change")
    towers = list(dict.fromkeys(table["tower"]))
    palette = dict(zip(towers, colours(len(towers)), strict=True))
    with styled():
        fig = new_figure(3.6 * len(towers) + 0.6, 3.4)
        axes = fig.subplots(1, len(towers), squeeze=False, sharey=True)[0]
        for ax, tower in zip(axes, towers, strict=True):
            part = table[table["tower"] == tower].sort_values("order")
            moved = (1.0 - part["cka"]).clip(lower=FLOOR)
            ax.plot(range(len(part)), moved, marker="o", color=palette[tower])
            ax.set_xticks(range(len(part)), part["position"], rotation=90 if len(part) > 14 else 0)
            ax.set_title(f"{tower} tower ({int(part['inputs'].iloc[0])} inputs)")
            ax.set_xlabel("block")
            log_axis(ax)
        axes[0].set_ylabel("1 − linear CKA (0 = unchanged)")
        fig.suptitle("Representation change per block: pretrained vs fine-tuned")
    return fig


def caption_rep_change(table: pd.DataFrame) -> str:
    """One sentence: where each tower's representation changed most."""
    parts = []
    for tower in dict.fromkeys(table["tower"]):
        part = table[table["tower"] == tower]
        low = part.loc[part["cka"].idxmin()]
        where = "the output feature" if low["position"] == "output" else f"block {low['position']}"
        parts.append(f"the {tower} tower changed most at {where} (CKA {low['cka']:.4f}, 1 − CKA {1 - low['cka']:.2g})")
    return (
        "Linear CKA between pretrained and fine-tuned hidden states on the same inputs (1 = unchanged); "
        + ", ".join(parts)
        + "."
    )


def draw_rep_configs(table: pd.DataFrame) -> Figure:
    """1 - CKA per block (log scale), one line per configuration (mean over its seeds, std as error bars),
    one panel per tower."""
    require(table, "rep_change_configs")
    towers = list(dict.fromkeys(table["tower"]))
    configs = list(dict.fromkeys(table["configuration"]))
    palette = dict(zip(configs, colours(len(configs)), strict=True))
    with styled():
        fig = new_figure(4.2 * len(towers) + 0.6, 3.6)
        axes = fig.subplots(1, len(towers), squeeze=False, sharey=True)[0]
        for ax, tower in zip(axes, towers, strict=True):
            for config in configs:
                part = table[(table["tower"] == tower) & (table["configuration"] == config)].sort_values("order")
                if part.empty:
                    continue
                runs = int(part["runs"].iloc[0])
                errors = part["cka_std"].fillna(0).to_numpy() if runs > 1 else None
                ax.errorbar(
                    range(len(part)), (1.0 - part["cka_mean"]).clip(lower=FLOOR), yerr=errors, marker="o",
                    markersize=3, capsize=2, color=palette[config], label=f"{config} ({runs} seeds)" if runs > 1
                    else config,
                )  # fmt: skip
                ax.set_xticks(range(len(part)), part["position"], rotation=90 if len(part) > 14 else 0)
            ax.set_title(f"{tower} tower")
            ax.set_xlabel("block")
            log_axis(ax)
        axes[0].set_ylabel("1 − linear CKA (0 = unchanged)")
        axes[-1].legend()
        fig.suptitle("Representation change per block, configurations side by side (mean over seeds)")
    return fig


def caption_rep_configs(table: pd.DataFrame) -> str:
    """Per configuration and tower: where the representation changed most (mean CKA over seeds)."""
    parts = []
    for config in dict.fromkeys(table["configuration"]):
        own = table[table["configuration"] == config]
        runs = int(own["runs"].max())
        towers = []
        for tower in dict.fromkeys(own["tower"]):
            part = own[own["tower"] == tower]
            low = part.loc[part["cka_mean"].idxmin()]
            where = "the output" if low["position"] == "output" else f"block {low['position']}"
            spread = f" ± {low['cka_std']:.2g}" if runs > 1 else ""
            towers.append(f"{tower} most at {where} (1 − CKA {1 - low['cka_mean']:.2g}{spread})")
        parts.append(
            f"{config} ({runs} seeds): " + ", ".join(towers) if runs > 1 else f"{config}: " + ", ".join(towers)
        )
    return "Linear CKA between pretrained and fine-tuned hidden states per block (1 = unchanged); " + (
        "; ".join(parts) + "."
    )


def finding_rep_change(table: pd.DataFrame) -> str:
    """The headline: per tower, where the representation moved most (REP_CHANGE); for REP_CONFIGS, each
    configuration's 1 - CKA of the output feature of each tower."""
    if "configuration" in table.columns:
        items = []
        for config, own in table.groupby("configuration", sort=False):
            out = own[own["position"] == "output"].set_index("tower")["cka_mean"]
            items.append(f"{config} " + " / ".join(f"{1 - out[t]:.2g}" for t in out.index))
        towers = " / ".join(dict.fromkeys(table["tower"]))
        return f"Representations, 1 − CKA of the output feature ({towers}): " + "; ".join(items) + "."
    items = []
    for tower in dict.fromkeys(table["tower"]):
        part = table[table["tower"] == tower]
        low = part.loc[part["cka"].idxmin()]
        where = "output" if low["position"] == "output" else f"block {low['position']}"
        items.append(f"{tower} tower most at {where} (1 − CKA {1 - low['cka']:.2g})")
    return "Representations: " + "; ".join(items) + "."
