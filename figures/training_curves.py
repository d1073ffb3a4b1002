"""The training curves: loss and its terms, and the training (and validation) accuracy, per logged step.

Reads TRAINING_CURVE_CONFIGS of :mod:`analysis.schemas` (one run is a configuration of one run).
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from figures.style import PAGE_WIDTH, colours, new_figure, require, styled

# (panel title, y label, metrics drawn in it with their line styles)
PANELS = (
    ("training loss", "loss", (("loss", "-"), ("ce", "--"))),
    ("regulariser", "1 − mean cos(t_c, t0_c)", (("reg", "-"),)),
    ("accuracy", "accuracy (%)", (("acc", "-"), ("val_acc", ":"))),
)
SMOOTH = 25  # the bold line: a centred moving average over 1/25 of the records (the faint one: the records)
NAMES = {"loss": "loss (ce + λ·reg)", "ce": "ce", "reg": "reg", "acc": "training", "val_acc": "validation"}


def _runs(part: pd.DataFrame) -> str:
    runs = int(part["runs"].max())
    return f"{runs} seeds" if runs > 1 else "1 run"


def draw_training_curves(table: pd.DataFrame) -> Figure:
    """Three panels (loss and ce; the regulariser; training and validation accuracy) against the step, one colour
    per configuration: the mean over its seeds, the band mean ± std."""
    require(table, "training_curves_configs")
    configs = list(dict.fromkeys(table["configuration"]))
    palette = dict(zip(configs, colours(len(configs)), strict=True))
    with styled():
        fig = new_figure(PAGE_WIDTH, 3.6)
        axes = fig.subplots(1, len(PANELS))
        for ax, (title, ylabel, metrics) in zip(axes, PANELS, strict=True):
            for config in configs:
                for metric, style in metrics:
                    line = table[(table["configuration"] == config) & (table["metric"] == metric)].sort_values("step")
                    if line.empty:
                        continue
                    window = max(1, len(line) // SMOOTH) if metric != "val_acc" else 1
                    mean = line["value_mean"].rolling(window, center=True, min_periods=1).mean()
                    if window > 1:  # the records themselves, faint, under their moving average
                        ax.plot(line["step"], line["value_mean"], color=palette[config], linestyle=style,
                                linewidth=0.6, alpha=0.3)  # fmt: skip
                    marker = "o" if metric == "val_acc" else None
                    ax.plot(line["step"], mean, color=palette[config], linestyle=style, marker=marker, markersize=3,
                            linewidth=1.3)  # fmt: skip
                    if line["value_std"].notna().any():
                        std = line["value_std"].rolling(window, center=True, min_periods=1).mean()
                        ax.fill_between(line["step"], mean - std, mean + std, color=palette[config], alpha=0.15,
                                        linewidth=0)  # fmt: skip
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.set_ylabel(ylabel)
            present = [(m, s) for m, s in metrics if (table["metric"] == m).any()]
            if len(present) > 1:
                ax.legend(handles=[Line2D([], [], color="#444", linestyle=s, label=NAMES[m]) for m, s in present])
        if len(configs) > 1:
            handles = [
                Line2D([], [], color=palette[c], label=f"{c} ({_runs(table[table['configuration'] == c])})")
                for c in configs
            ]
            fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(configs)))
        bands = "; mean over seeds, band ± std" if (table["runs"] > 1).any() else ""
        fig.suptitle(f"Training curves from metrics.jsonl (bold: moving average over 1/{SMOOTH} of the records{bands})")
    return fig


def _first_last(part: pd.DataFrame, metric: str) -> tuple[float, float, int] | None:
    """(the first record, the mean of the last tenth of the records, the last step) of ``metric``."""
    line = part[part["metric"] == metric].sort_values("step")
    if line.empty:
        return None
    tenth = max(1, math.ceil(len(line) / 10))
    return float(line["value_mean"].iloc[0]), float(line["value_mean"].iloc[-tenth:].mean()), int(line["step"].iloc[-1])


def caption_training_curves(table: pd.DataFrame) -> str:
    """Per configuration: loss, ce and reg from the first to the last record, the training accuracy, and the last
    and best validation accuracy (or that none was logged)."""
    parts = []
    for config in dict.fromkeys(table["configuration"]):
        part = table[table["configuration"] == config]
        items = []
        for metric, fmt in (("loss", ".3f"), ("ce", ".3f"), ("reg", ".2g")):
            span = _first_last(part, metric)
            if span:
                items.append(f"{metric} {span[0]:{fmt}} → {span[1]:{fmt}}")
        acc = _first_last(part, "acc")
        if acc:
            items.append(f"training accuracy {acc[0]:.1f}% → {acc[1]:.1f}% by step {acc[2]}")
        val = part[part["metric"] == "val_acc"].sort_values("step")
        if val.empty:
            items.append("no validation accuracy logged")
        else:
            best = val.loc[val["value_mean"].idxmax()]
            last = val["value_mean"].iloc[-1]
            items.append(
                f"validation accuracy {last:.1f}% at the last record (best {best['value_mean']:.1f}% at step "
                f"{int(best['step'])})"
            )
        parts.append(f"{config} ({_runs(part)}): " + ", ".join(items))
    return (
        "Training loss (ce + λ·reg), its terms and the training accuracy per logged step, each record the mean over "
        "the steps since the previous one; first record → mean of the last tenth of the records: "
        + "; ".join(parts)
        + "."
    )


def finding_training_curves(table: pd.DataFrame) -> str:
    """The headline: each configuration's loss and training accuracy, first record → mean of the last tenth."""
    items = []
    for config in dict.fromkeys(table["configuration"]):
        part = table[table["configuration"] == config]
        loss, acc = _first_last(part, "loss"), _first_last(part, "acc")
        if loss and acc:
            items.append(
                f"{config} loss {loss[0]:.2f} → {loss[1]:.2f}, training accuracy {acc[0]:.1f}% → {acc[1]:.1f}% "
                f"over {loss[2]} steps"
            )
    return ("Training: " + "; ".join(items) + ".") if items else ""
