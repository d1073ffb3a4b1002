"""Result figures: base-to-new bars, few-shot curves, transfer bars.

Reads the BASE2NEW, FEWSHOT and EVAL tables of :mod:`analysis.schemas`.
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

from analysis.schemas import ALL_SHOTS, shots_order
from figures.style import PAGE_WIDTH, SMALL, colours, new_figure, require, styled


def _pct(value: float) -> str:
    """Two decimals, or n/a for a metric that does not apply (a linear probe's New)."""
    return "n/a" if pd.isna(value) else f"{value:.2f}"


def _own(table: pd.DataFrame) -> pd.DataFrame:
    """Rows measured here (published comparison rows have a non-empty ``source``)."""
    return table[table["source"] == ""]


def _with_labels(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a ``label`` column: the method, plus the model and/or the pretrained weights
    where the table holds several (so two rows never share a label)."""
    pairs = table.drop_duplicates(["model", "pretrained"])
    show_model = pairs["model"].nunique() > 1
    show_weights = len(pairs) > pairs["model"].nunique()  # some model with several pretrained weights

    def label(row: pd.Series) -> str:
        tag = " ".join(
            part
            for part in (str(row["model"]) if show_model else "", f"({row['pretrained']})" if show_weights else "")
            if part
        )
        return f"{row['method']} · {tag}" if tag else str(row["method"])

    return table.assign(label=[label(r) for _, r in table.iterrows()])


def _methods_and_palette(labelled: pd.DataFrame) -> tuple[list[str], dict[str, object]]:
    """The labels of a labelled table in first-seen order, and one colour for each."""
    methods = list(dict.fromkeys(labelled["label"]))
    return methods, dict(zip(methods, colours(len(methods)), strict=True))


def draw_base2new(table: pd.DataFrame) -> Figure:
    """Base, New and HM per dataset (and the Average), one bar per method: side by side for up to three
    datasets, one above the other (each as wide as the page) for more."""
    require(table, "results_base2new")
    own = _with_labels(_own(table))
    datasets = list(dict.fromkeys(own["dataset"]))
    methods, palette = _methods_and_palette(own)
    width = 0.8 / len(methods)
    with styled():
        stacked = len(datasets) > 3
        if stacked:
            fig = new_figure(PAGE_WIDTH, 7.5)
            axes = fig.subplots(3, 1, sharex=True)
        else:
            fig = new_figure(max(6.0, 1.1 * len(datasets) * 3), 3.4)
            axes = fig.subplots(1, 3, sharey=True)
        for ax, (column, title) in zip(axes, (("base_mean", "Base"), ("new_mean", "New"), ("hm", "HM")), strict=True):
            for m, method in enumerate(methods):
                values = own[own["label"] == method].set_index("dataset")[column]
                xs = [i - 0.4 + width * (m + 0.5) for i in range(len(datasets))]
                ax.bar(
                    xs, [values.get(d, math.nan) for d in datasets], width=width, color=palette[method], label=method
                )
            ax.set_xticks(
                range(len(datasets)),
                datasets,
                rotation=45 if len(datasets) > 3 else 0,
                ha="right" if len(datasets) > 3 else "center",
            )
            ax.set_title(title)
            if stacked:
                ax.set_ylabel("accuracy (%)")
            if len(datasets) * len(methods) <= 12:
                for container in ax.containers:
                    ax.bar_label(container, fmt="%.1f", fontsize=SMALL, padding=1)
        axes[0].set_ylabel("accuracy (%)")
        where = "outside lower center" if stacked else "outside right center"
        fig.legend(*axes[0].get_legend_handles_labels(), loc=where, ncol=min(4, len(methods)) if stacked else 1)
        fig.suptitle("Base-to-new generalisation (mean over seeds)")
    return fig


def caption_base2new(table: pd.DataFrame) -> str:
    """One sentence: each method's Base/New/HM on the Average row (or the only dataset)."""
    own = _with_labels(_own(table))
    row_set = own[own["dataset"] == "Average"] if (own["dataset"] == "Average").any() else own
    where = "averaged over datasets" if (own["dataset"] == "Average").any() else f"on {row_set['dataset'].iloc[0]}"
    parts = [
        f"{r['label']} {_pct(r['base_mean'])} / {_pct(r['new_mean'])} / {_pct(r['hm'])}"
        for _, r in row_set.drop_duplicates(["label"]).iterrows()
    ]
    return f"Base / New / HM accuracy (%) {where}, mean over seeds: " + "; ".join(parts) + "."


def draw_fewshot(table: pd.DataFrame) -> Figure:
    """Accuracy against shots, one panel per dataset (and the Average); zero-shot is the 0-shot point."""
    require(table, "results_fewshot")
    own = _with_labels(_own(table))
    datasets = list(dict.fromkeys(own["dataset"]))
    methods, palette = _methods_and_palette(own)
    shots = sorted(own["shots"].unique(), key=shots_order)
    cols = min(4, len(datasets))
    rows = math.ceil(len(datasets) / cols)
    panel = min(3.2, (PAGE_WIDTH - 0.6) / cols)  # inches per panel: 4 columns share the page, never beyond it
    with styled():
        fig = new_figure(panel * cols + 0.6, panel * 2.9 / 3.2 * rows + 0.4)
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax, dataset in zip(axes.flat, datasets, strict=False):
            part = own[own["dataset"] == dataset]
            for method in methods:
                line = part[part["label"] == method].sort_values("shots", key=lambda c: c.map(shots_order))
                if line.empty:
                    continue
                xs = [shots.index(s) for s in line["shots"]]
                ax.plot(
                    xs, line["acc_mean"], marker="*" if len(line) == 1 else "o", color=palette[method], label=method
                )
            ax.set_xticks(range(len(shots)), [str(s) for s in shots])
            ax.set_title(dataset)
            ax.set_xlabel("shots per class")
            ax.set_ylabel("accuracy (%)")
        for ax in list(axes.flat)[len(datasets) :]:
            ax.set_visible(False)
        axes.flat[0].legend()
        fig.suptitle("Few-shot accuracy (mean over seeds)")
    return fig


def caption_fewshot(table: pd.DataFrame) -> str:
    """One sentence: each method's accuracy at the largest number of shots."""
    own = _with_labels(_own(table))
    average = own[own["dataset"] == "Average"]
    rows = average if not average.empty else own
    top = max(rows["shots"], key=shots_order)
    at_top = rows[(rows["shots"] == top) & (rows["method"] != "zero-shot")]
    parts = [f"{r['label']} {r['acc_mean']:.2f}" for _, r in at_top.iterrows()]
    zero = rows[rows["method"] == "zero-shot"].drop_duplicates(["label"])
    lead = "".join(f"{r['label']} {r['acc_mean']:.2f}; " for _, r in zero.iterrows())
    where = "averaged over datasets" if not average.empty else f"on {rows['dataset'].iloc[0]}"
    return (
        f"Accuracy (%) against shots per class {where}, mean over seeds: {lead}"
        + ("with every training image " if top == ALL_SHOTS else f"at {top} shots ")
        + "; ".join(parts)
        + "."
    )


def draw_eval(table: pd.DataFrame) -> Figure:
    """Target accuracy of each trained method beside its zero-shot accuracy."""
    require(table, "results_eval")
    own = _with_labels(_own(table))
    targets = list(dict.fromkeys(own["dataset"]))
    methods = list(dict.fromkeys(own["label"]))
    series = [("zero-shot", None)] + [(m, m) for m in methods]
    palette = dict(zip([s for s, _ in series], colours(len(series)), strict=True))
    width = 0.8 / len(series)
    with styled():
        fig = new_figure(min(PAGE_WIDTH, max(5.0, 0.9 * len(targets) * len(series))), 3.4)
        ax = fig.subplots()
        for k, (label, method) in enumerate(series):
            if method is None:
                values = own.groupby("dataset", sort=False)["zero_shot_mean"].mean()
            else:
                values = own[own["label"] == method].set_index("dataset")["acc_mean"]
            xs = [i - 0.4 + width * (k + 0.5) for i in range(len(targets))]
            ax.bar(xs, [values.get(t, math.nan) for t in targets], width=width, color=palette[label], label=label)
        ax.set_xticks(range(len(targets)), targets, rotation=30, ha="right")
        ax.set_ylabel("accuracy (%)")
        ax.legend()
        fig.suptitle("Cross-dataset transfer and domain generalisation")
    return fig


def caption_eval(table: pd.DataFrame) -> str:
    """One sentence: mean target accuracy of each method against zero-shot."""
    own = _own(table)
    parts = [
        f"{m} {part['acc_mean'].mean():.2f} (zero-shot {part['zero_shot_mean'].mean():.2f})"
        for m, part in own.groupby("method", sort=False)
    ]
    return f"Accuracy (%) on {own['dataset'].nunique()} target datasets, mean over targets: " + "; ".join(parts) + "."


def scatter_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows the Base/New scatter plots: measured rows of the Average, or of the only dataset."""
    own = _own(table)
    dataset = "Average" if (own["dataset"] == "Average").any() else own["dataset"].iloc[0]
    return own[own["dataset"] == dataset].reset_index(drop=True)


def _label_offsets(ax, xs, ys, labels, fontsize: float) -> dict[str, tuple[float, float]]:
    """Offsets (points) of point labels so that none overlaps another: each label starts up and right
    of its point and steps down a line while its box meets one already placed (top to bottom)."""
    to_px = ax.figure.dpi / 72.0
    line, placed, offsets = fontsize * 1.25, [], {}
    for x, y, label in sorted(zip(xs, ys, labels, strict=True), key=lambda t: (-t[1], t[0])):
        px, py = ax.transData.transform((x, y)) / to_px  # in points
        width, dy = 0.6 * fontsize * len(label), 4.0
        while any(abs(py + dy - qy) < line and px + 4 < qx + qw and qx < px + 4 + width for qx, qy, qw in placed):
            dy -= line
        placed.append((px + 4, py + dy, width))
        offsets[label] = (4.0, dy)
    return offsets


def draw_base_new_scatter(table: pd.DataFrame) -> Figure:
    """New against Base accuracy, one point per method (mean over seeds, +- std), with iso-HM curves.

    One panel: the Average row when there are several datasets, else the only dataset. Methods
    without a New accuracy (a linear probe) are drawn as a vertical mark at their Base accuracy.
    """
    require(table, "results_base2new")
    own = _with_labels(_own(table))
    dataset = "Average" if (own["dataset"] == "Average").any() else own["dataset"].iloc[0]
    rows = own[own["dataset"] == dataset]
    _, palette = _methods_and_palette(rows)
    with styled():
        fig = new_figure(7.0, 4.4)
        ax = fig.subplots()
        values = pd.concat([rows["base_mean"], rows["new_mean"]]).dropna()
        low, high = max(0.0, values.min() - 8), min(100.0, values.max() + 8)
        grid = [low + (high - low) * i / 200 for i in range(201)]
        for level in range(10, 100, 10):  # HM = 2BN / (B + N) = level  <=>  N = level B / (2B - level)
            curve = [(b, level * b / (2 * b - level)) for b in grid if 2 * b > level]
            curve = [(b, n) for b, n in curve if low <= n <= high]
            if curve:
                ax.plot(*zip(*curve, strict=True), color="0.8", lw=0.7, zorder=0)
                ax.annotate(f"HM {level}", curve[-1], fontsize=SMALL, color="0.55", ha="right", va="bottom")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        points = rows.dropna(subset=["new_mean"])
        offsets = _label_offsets(ax, points["base_mean"], points["new_mean"], points["label"], fontsize=SMALL)
        for _, row in rows.iterrows():
            colour = palette[row["label"]]
            if pd.isna(row["new_mean"]):
                ax.axvline(row["base_mean"], color=colour, ls=":", lw=1.2, label=f"{row['label']} (Base only)")
                continue
            zero_shot = row["method"] == "zero-shot"
            ax.errorbar(
                row["base_mean"], row["new_mean"], xerr=row["base_std"], yerr=row["new_std"],
                fmt="*" if zero_shot else "o", ms=11 if zero_shot else 6, color="black" if zero_shot else colour,
                capsize=2, label=row["label"], zorder=3,
            )  # fmt: skip
            ax.annotate(row["label"], (row["base_mean"], row["new_mean"]), xytext=offsets[row["label"]],
                        textcoords="offset points", fontsize=SMALL, color="black" if zero_shot else colour)  # fmt: skip
        ax.set_xlabel("Base accuracy (%)")
        ax.set_ylabel("New accuracy (%)")
        ax.set_title(f"New against Base on {dataset} (mean ± std over seeds)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return fig


def caption_base_new_scatter(table: pd.DataFrame) -> str:
    """One sentence: which methods beat zero-shot on Base, on New, and on HM."""
    own = _with_labels(_own(table))
    dataset = "Average" if (own["dataset"] == "Average").any() else own["dataset"].iloc[0]
    rows = own[own["dataset"] == dataset]
    zero = rows[rows["method"] == "zero-shot"]
    if zero.empty:
        return f"New against Base accuracy (%) on {dataset}; grey curves are constant harmonic mean."
    sentences = [f"New against Base accuracy (%) on {dataset}, grey curves at constant harmonic mean."]
    for _, zs in zero.iterrows():  # each method against the zero-shot of its own model and weights
        others = rows[(rows["model"] == zs["model"]) & (rows["pretrained"] == zs["pretrained"])]
        others = others[others["method"] != "zero-shot"]
        above_hm = [r["label"] for _, r in others.iterrows() if pd.notna(r["hm"]) and r["hm"] > zs["hm"]]
        below_new = [
            r["label"] for _, r in others.iterrows() if pd.notna(r["new_mean"]) and r["new_mean"] < zs["new_mean"]
        ]
        name = "zero-shot's" if len(zero) == 1 else f"{zs['label']}'s"
        sentences.append(
            f"Above {name} HM ({zs['hm']:.2f}): {', '.join(above_hm) or 'none'}; "
            f"below it on New ({zs['new_mean']:.2f}): {', '.join(below_new) or 'none'}."
        )
    return " ".join(sentences)
