"""Per class: which classes fine-tuning helped and hurt, where the worst ones' images went, and whether the
classes whose text feature moved most are the ones whose accuracy changed.

Reads PER_CLASS_CONFIGS, CONFUSION_CHANGE and CLASS_CORRELATION of :mod:`analysis.schemas`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from figures.style import PAGE_WIDTH, PALETTE, SMALL, new_figure, require, styled

TOP = 5  # classes gained and lost shown per configuration


def _r(value: float) -> str:
    """A correlation to two decimals, without a minus sign on a rounded zero."""
    return f"{round(value, 2) + 0.0:.2f}"


COLUMNS = 8  # predicted classes shown in the confusion change


def _runs(part: pd.DataFrame) -> str:
    runs = int(part["runs"].max())
    return f"{runs} seeds" if runs > 1 else "1 run"


def _correlation(correlation: pd.DataFrame, config: str) -> pd.Series | None:
    own = correlation[correlation["configuration"] == config]
    if own.empty:
        return None
    pooled = own[own["subset"] == "all"]
    return (pooled if not pooled.empty else own).iloc[0]


def _confusion_matrix(confusion: pd.DataFrame, config: str) -> pd.DataFrame:
    own = confusion[confusion["configuration"] == config]
    rows = list(dict.fromkeys(f"{c} ({s})" for c, s in zip(own["true_class"], own["subset"], strict=True)))
    own = own.assign(row=[f"{c} ({s})" for c, s in zip(own["true_class"], own["subset"], strict=True)])
    weight = own.groupby("pred_class")["change"].apply(lambda v: v.abs().sum()).sort_values(ascending=False)
    columns = list(weight.index[:COLUMNS])
    matrix = own[own["pred_class"].isin(columns)].pivot_table(
        index="row", columns="pred_class", values="change", aggfunc="sum", fill_value=0
    )
    return matrix.reindex(index=rows, columns=columns, fill_value=0)


def draw_per_class(configs: pd.DataFrame, confusion: pd.DataFrame, correlation: pd.DataFrame) -> Figure:
    """Four panels (two rows of two) per configuration: accuracy per class (zero-shot vs fine-tuned), the classes
    that gained and lost most, text-feature movement against accuracy change, and the confusion change of the
    worst classes."""
    require(configs, "per_class_configs")
    names = list(dict.fromkeys(configs["configuration"]))
    subsets = list(dict.fromkeys(configs["subset"]))
    colour = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(subsets)}
    with styled():
        fig = new_figure(PAGE_WIDTH, 7.2 * len(names) + 0.4)
        grid = fig.subplots(2 * len(names), 2, squeeze=False)
        panels = [[*grid[2 * i], *grid[2 * i + 1]] for i in range(len(names))]
        for row, config in zip(panels, names, strict=True):
            part = configs[configs["configuration"] == config]
            label = f"{config} ({_runs(part)})"
            ax = row[0]
            for subset in subsets:
                own = part[part["subset"] == subset]
                ax.scatter(own["zs_acc_mean"], own["ft_acc_mean"], s=14, color=colour[subset], label=subset)
            ax.plot([0, 100], [0, 100], color="#999", linewidth=0.8, linestyle="--")
            ax.set_xlim(-2, 102), ax.set_ylim(-2, 102)
            ax.set_xlabel("zero-shot accuracy (%)")
            ax.set_ylabel("fine-tuned accuracy (%)")
            ax.set_title(label)
            ax.legend(loc="lower right")
            ax = row[1]
            ranked = part.sort_values("delta_mean", ascending=False, kind="stable")
            shown = pd.concat([ranked.head(TOP), ranked.tail(TOP)]).drop_duplicates(["subset", "label"])
            errors = shown["delta_std"].fillna(0.0) if shown["delta_std"].notna().any() else None
            ax.barh(
                range(len(shown)),
                shown["delta_mean"],
                color=[colour[s] for s in shown["subset"]],
                xerr=errors,
                capsize=2,
            )
            ax.set_yticks(
                range(len(shown)), [f"{c} ({s})" for c, s in zip(shown["classname"], shown["subset"], strict=True)]
            )
            ax.invert_yaxis()
            ax.axvline(0, color="#444", linewidth=0.8)
            ax.set_xlabel("accuracy change (points)")
            ax.set_title(f"gained and lost most (of {len(part)} classes)")
            ax = row[2]
            for subset in subsets:
                own = part[part["subset"] == subset]
                ax.scatter(own["text_cos_mean"], own["delta_mean"], s=14, color=colour[subset], label=subset)
            ax.axhline(0, color="#999", linewidth=0.8)
            r = _correlation(correlation, config)
            stats = f"r = {_r(r['pearson'])}, ρ = {_r(r['spearman'])}" if r is not None else ""
            ax.set_title(f"text movement vs accuracy change ({stats})")
            ax.set_xlabel("cos(t_c, t0_c)  (1 = unmoved)")
            ax.set_ylabel("accuracy change (points)")
            ax = row[3]
            matrix = _confusion_matrix(confusion, config) if not confusion.empty else pd.DataFrame()
            if matrix.empty:
                ax.set_visible(False)
                continue
            bound = max(1, int(np.abs(matrix.to_numpy()).max()))
            image = ax.imshow(matrix.to_numpy(), cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
            for (i, j), value in np.ndenumerate(matrix.to_numpy()):
                if value:
                    ax.text(j, i, f"{value:+d}", ha="center", va="center", fontsize=SMALL)
            ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=45, ha="right")
            ax.set_yticks(range(matrix.shape[0]), matrix.index)
            ax.set_xlabel("predicted class")
            ax.set_title("confusion change of the worst classes\n(fine-tuned − zero-shot)")
            ax.grid(False)
            fig.colorbar(image, ax=ax, shrink=0.8, label="images")
        fig.suptitle("Per class: zero-shot vs fine-tuned accuracy (mean over seeds)")
    return fig


def caption_per_class(configs: pd.DataFrame, confusion: pd.DataFrame, correlation: pd.DataFrame) -> str:
    """Per configuration: classes gained and lost, the extremes, where the worst class's images went, and the
    correlation of text movement with accuracy change."""
    parts = []
    for config in dict.fromkeys(configs["configuration"]):
        part = configs[configs["configuration"] == config]
        gained, lost = int((part["delta_mean"] > 0).sum()), int((part["delta_mean"] < 0).sum())
        means = ", ".join(
            f"{s} {part.loc[part['subset'] == s, 'delta_mean'].mean():+.1f}" for s in dict.fromkeys(part["subset"])
        )
        best = part.loc[part["delta_mean"].idxmax()]
        worst = part.loc[part["delta_mean"].idxmin()]
        sentence = (
            f"{config} ({_runs(part)}): {gained} of {len(part)} classes gained, {lost} lost (mean change {means} "
            f"points); most gained {best['classname']} ({best['subset']}, {best['delta_mean']:+.1f}), most lost "
            f"{worst['classname']} ({worst['subset']}, {worst['delta_mean']:+.1f})"
        )
        own = confusion[
            (confusion["configuration"] == config)
            & (confusion["true_class"] == worst["classname"])
            & (confusion["subset"] == worst["subset"])
            & (confusion["pred_class"] != worst["classname"])
        ]
        if not own.empty and own["change"].max() > 0:
            to = own.loc[own["change"].idxmax()]
            sentence += f", whose images now go to {to['pred_class']} more often ({int(to['change']):+d})"
        r = _correlation(correlation, config)
        if r is not None:
            sentence += (
                f"; cos(t_c, t0_c) against the accuracy change over {int(r['classes'])} classes: "
                f"Pearson r = {_r(r['pearson'])}, Spearman ρ = {_r(r['spearman'])}"
            )
        parts.append(sentence)
    return "Per-class accuracy, zero-shot against fine-tuned (points = percentage points). " + "; ".join(parts) + "."


def finding_per_class(configs: pd.DataFrame, correlation: pd.DataFrame) -> str:
    """The headline of each configuration: classes gained and lost, the largest loss, the correlation of text
    movement and accuracy change."""
    items = []
    for config in dict.fromkeys(configs["configuration"]):
        part = configs[configs["configuration"] == config]
        worst = part.loc[part["delta_mean"].idxmin()]
        r = _correlation(correlation, config)
        item = (
            f"{config} ({_runs(part)}) {int((part['delta_mean'] > 0).sum())} of {len(part)} classes gained, "
            f"{int((part['delta_mean'] < 0).sum())} lost (largest loss {worst['classname']}, {worst['subset']}, "
            f"{worst['delta_mean']:+.1f} points"
        )
        item += f"; r = {_r(r['pearson'])}, ρ = {_r(r['spearman'])})" if r is not None else ")"
        items.append(item)
    return "Per class, with the correlation of text-feature movement and accuracy change: " + "; ".join(items) + "."
