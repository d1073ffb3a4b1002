"""How much each block's representation moved: linear CKA, pretrained against fine-tuned, and the shift of the
mean feature (which CKA cannot see).

Reads the REP_CHANGE and REP_CONFIGS tables of :mod:`analysis.schemas`. Values of 1 - CKA (and of the mean
shift) below :data:`FLOOR` are float rounding of "unchanged" as far as the measure can tell: they are drawn
hollow on the floor of the log axis and written "< 1e-6", never as a number such as 1e-12.
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

from figures.style import PAGE_WIDTH, colours, log_axis, new_figure, require, styled

FLOOR = 1e-6  # 1 - CKA (or a mean shift) below this is shown as "< 1e-6"
FLOOR_TEXT = f"{FLOOR:.0e}".replace("e-0", "e-")  # "1e-6"
CKA_BLIND = (
    "CKA centres the features, so it cannot see a constant shift (adding one vector to every input's features "
    "leaves it at 1); the mean-feature shift ‖Δmean‖ / ‖mean‖ (bottom row) does"
)


def below_floor(value: float) -> str:
    """``value`` to two significant digits, or "< 1e-6" below :data:`FLOOR`."""
    if value != value:
        return "n/a"
    return f"< {FLOOR_TEXT}" if value < FLOOR else f"{value:.2g}"


def _percent(value: float) -> str:
    if value != value:
        return "n/a"
    return f"< {FLOOR_TEXT}" if value < FLOOR else f"{100 * value:.3g}%"


def _floored(ax, xs, values, color, label=None, errors=None) -> None:
    """Line and markers of ``values`` on a log axis, values under FLOOR drawn hollow on it."""
    clipped = [max(v, FLOOR) if v == v else math.nan for v in values]
    ax.errorbar(xs, clipped, yerr=errors, color=color, marker="o", markersize=4, capsize=2 if errors else 0,
                linewidth=1.2, label=label)  # fmt: skip
    low = [(x, FLOOR) for x, v in zip(xs, values, strict=True) if v == v and v < FLOOR]
    if low:
        ax.scatter(*zip(*low, strict=True), s=36, facecolors="white", edgecolors=color, linewidths=1.2, zorder=3)
        ax.axhline(FLOOR, color="#999", linewidth=0.8, linestyle=":")


def _panels(table: pd.DataFrame, cka: str, shift: str, series: str | None, std: str | None = None) -> Figure:
    towers = list(dict.fromkeys(table["tower"]))
    names = list(dict.fromkeys(table[series])) if series else [None]
    palette = dict(zip(names if series else towers, colours(len(names) if series else len(towers)), strict=True))
    with styled():
        fig = new_figure(min(PAGE_WIDTH, 4.4 * len(towers) + 0.8), 6.0)
        axes = fig.subplots(2, len(towers), squeeze=False, sharey="row")
        for ax in axes.flat:
            log_axis(ax)
        for col, tower in enumerate(towers):
            top, bottom = axes[0][col], axes[1][col]
            for name in names:
                part = table[table["tower"] == tower]
                part = (part[part[series] == name] if series else part).sort_values("order")
                if part.empty:
                    continue
                colour = palette[name if series else tower]
                runs = int(part["runs"].iloc[0]) if "runs" in part else 1
                label = (f"{name} ({runs} seeds)" if runs > 1 else name) if series else None
                xs = list(range(len(part)))
                errors = part[std].fillna(0).tolist() if std and runs > 1 else None
                _floored(top, xs, (1.0 - part[cka]).tolist(), colour, label, errors)
                shift_errors = part[f"{shift}_std"].fillna(0).tolist() if std and runs > 1 else None
                _floored(bottom, xs, part[shift].tolist() if not std else part[f"{shift}_mean"].tolist(), colour,
                         None, shift_errors)  # fmt: skip
                for ax in (top, bottom):
                    ax.set_xticks(xs, part["position"], rotation=90 if len(part) > 14 else 0)
            inputs = f" ({int(table[table['tower'] == tower]['inputs'].iloc[0])} inputs)"
            top.set_title(f"{tower} tower{inputs if not series else ''}")
            bottom.set_xlabel("block")
        axes[0][0].set_ylabel("1 − linear CKA")
        axes[1][0].set_ylabel("‖Δ mean feature‖ / ‖mean‖")
        if series:
            axes[0][-1].legend()
        over = ", mean over seeds" if series else ""
        fig.suptitle(
            f"Representation change per block{over}: 1 − CKA (top; hollow: below {FLOOR_TEXT}), "
            "mean-feature shift (bottom)"
        )
    return fig


def draw_rep_change(table: pd.DataFrame) -> Figure:
    """Top: 1 - CKA per block on a log scale (higher = moved more), one column per tower, blocks in forward order,
    then the output feature; bottom: the mean-feature shift. Fine-tuning a few tensors keeps CKA close to 1, so its
    complement on a log axis is what shows which blocks moved; values below FLOOR sit hollow on it."""
    require(table, "rep_change")
    return _panels(table, "cka", "mean_shift", None)


def _blind_spots(table: pd.DataFrame, cka: str, shift: str) -> list[str]:
    """Blocks whose 1 - CKA is below FLOOR while their mean feature moved (by at least FLOOR)."""
    spots = []
    for _, row in table.sort_values(["tower", "order"], kind="stable").iterrows():
        moved = 1.0 - row[cka]
        if moved < FLOOR and row[shift] == row[shift] and row[shift] >= FLOOR:
            where = "output" if row["position"] == "output" else f"block {row['position']}"
            spots.append(f"{row['tower']} {where} (1 − CKA {below_floor(moved)}, mean moved {_percent(row[shift])})")
    return spots


def _blindness(table: pd.DataFrame, cka: str = "cka", shift: str = "mean_shift") -> str:
    """The caption's sentence on what CKA cannot see, with the blocks where it matters and the largest mean shift."""
    parts = []
    for tower in dict.fromkeys(table["tower"]):
        part = table[(table["tower"] == tower)].dropna(subset=[shift])
        if part.empty:
            continue
        top = part.loc[part[shift].idxmax()]
        where = "the output" if top["position"] == "output" else f"block {top['position']}"
        parts.append(f"{tower} most at {where} ({_percent(top[shift])} of the pretrained mean's norm)")
    spots = _blind_spots(table, cka, shift)
    sentence = f"{CKA_BLIND}: " + ", ".join(parts)
    if spots:
        sentence += "; unchanged to CKA but shifted: " + ", ".join(spots)
    return sentence + "."


def caption_rep_change(table: pd.DataFrame) -> str:
    """Two sentences: where each tower's representation changed most by CKA, and what the mean shift adds."""
    parts = []
    for tower in dict.fromkeys(table["tower"]):
        part = table[table["tower"] == tower]
        low = part.loc[part["cka"].idxmin()]
        if 1 - low["cka"] < FLOOR:
            parts.append(
                f"the {tower} tower is unchanged to CKA in every block (1 − CKA {below_floor(1 - low['cka'])})"
            )
            continue
        where = "the output feature" if low["position"] == "output" else f"block {low['position']}"
        parts.append(
            f"the {tower} tower changed most at {where} (CKA {low['cka']:.4f}, 1 − CKA {below_floor(1 - low['cka'])})"
        )
    return (
        "Linear CKA between pretrained and fine-tuned hidden states on the same inputs (1 = unchanged); "
        + ", ".join(parts)
        + ". "
        + _blindness(table)
    )


def draw_rep_configs(table: pd.DataFrame) -> Figure:
    """1 - CKA (top) and the mean-feature shift (bottom) per block (log scale), one line per configuration (mean
    over its seeds, std as error bars), one column per tower."""
    require(table, "rep_change_configs")
    return _panels(table, "cka_mean", "mean_shift", "configuration", std="cka_std")


def caption_rep_configs(table: pd.DataFrame) -> str:
    """Per configuration and tower: where the representation changed most (mean CKA over seeds) and where its mean
    feature shifted most; then what CKA cannot see."""
    parts, spots = [], []
    for config in dict.fromkeys(table["configuration"]):
        own = table[table["configuration"] == config]
        runs = int(own["runs"].max())
        towers = []
        for tower in dict.fromkeys(own["tower"]):
            part = own[own["tower"] == tower]
            low = part.loc[part["cka_mean"].idxmin()]
            where = "the output" if low["position"] == "output" else f"block {low['position']}"
            spread = f" ± {low['cka_std']:.2g}" if runs > 1 else ""
            text = f"{tower} most at {where} (1 − CKA {below_floor(1 - low['cka_mean'])}{spread})"
            shifted = part.dropna(subset=["mean_shift_mean"])
            if not shifted.empty:
                top = shifted.loc[shifted["mean_shift_mean"].idxmax()]
                at = "the output" if top["position"] == "output" else f"block {top['position']}"
                text += f", mean shift most at {at} ({_percent(top['mean_shift_mean'])})"
            towers.append(text)
        parts.append(f"{config} ({runs} seeds): " if runs > 1 else f"{config}: ")
        parts[-1] += ", ".join(towers)
        spots += [f"{config} {spot}" for spot in _blind_spots(own, "cka_mean", "mean_shift_mean")]
    sentence = "Linear CKA between pretrained and fine-tuned hidden states per block (1 = unchanged); "
    sentence += "; ".join(parts) + f". {CKA_BLIND}"
    return sentence + ("; unchanged to CKA but shifted: " + ", ".join(spots) if spots else "") + "."


def finding_rep_change(table: pd.DataFrame) -> str:
    """The headline: per tower, where the representation moved most (REP_CHANGE), and the largest mean shift where
    CKA sees none; for REP_CONFIGS, each configuration's 1 - CKA of the output feature of each tower."""
    if "configuration" in table.columns:
        items = []
        for config, own in table.groupby("configuration", sort=False):
            out = own[own["position"] == "output"].set_index("tower")["cka_mean"]
            items.append(f"{config} " + " / ".join(below_floor(1 - out[t]) for t in out.index))
        towers = " / ".join(dict.fromkeys(table["tower"]))
        return f"Representations, 1 − CKA of the output feature ({towers}): " + "; ".join(items) + "."
    items = []
    for tower in dict.fromkeys(table["tower"]):
        part = table[table["tower"] == tower]
        low = part.loc[part["cka"].idxmin()]
        where = "output" if low["position"] == "output" else f"block {low['position']}"
        items.append(f"{tower} tower most at {where} (1 − CKA {below_floor(1 - low['cka'])})")
    spots = _blind_spots(table, "cka", "mean_shift")
    blind = f"; CKA cannot see a constant shift: {spots[0]}" if spots else ""
    return "Representations: " + "; ".join(items) + blind + "."
