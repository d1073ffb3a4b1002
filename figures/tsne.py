"""Paper Fig. 5: t-SNE of the same test images' features, zero-shot beside fine-tuned.

Reads the TSNE and TSNE_METRICS tables of :mod:`analysis.schemas`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd
from matplotlib.figure import Figure

from figures.style import colours, new_figure, require, styled


def draw_tsne(points: pd.DataFrame, metrics: pd.DataFrame) -> Figure:
    """One scatter per model, coloured by class, titled with its silhouette and k-NN accuracy."""
    require(points, "tsne")
    require(metrics, "tsne_metrics")
    models = list(dict.fromkeys(points["model"]))
    classes = points.drop_duplicates("label").sort_values("label")
    palette = dict(zip(classes["label"], colours(len(classes)), strict=True))
    scores = metrics.set_index("model")
    cols = min(4, len(models))
    rows = math.ceil(len(models) / cols)
    with styled():
        fig = new_figure(4.2 * cols + 1.8, 4.4 * rows)
        axes = list(fig.subplots(rows, cols, squeeze=False).flat)  # a list: the loops below both read it
        for ax in axes[len(models) :]:
            ax.set_visible(False)
        for ax, model in zip(axes, models, strict=False):
            part = points[points["model"] == model]
            for label, name in zip(classes["label"], classes["classname"], strict=True):
                mine = part[part["label"] == label]
                ax.scatter(mine["x"], mine["y"], s=9, color=palette[label], label=name, linewidths=0)
            m = scores.loc[model]
            ax.set_title(f"{model}\nsilhouette {m['silhouette']:.3f} · {int(m['k'])}-NN acc {m['knn_acc']:.1f}%")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", markerscale=2)
        fig.suptitle(f"t-SNE of image features ({int(metrics['images'].iloc[0])} test images)")
    return fig


def _pm(values: pd.Series, digits: int) -> str:
    mean = f"{values.mean():.{digits}f}"
    return f"{mean} ± {values.std():.{digits}f}" if len(values) > 1 else mean


def caption_tsne(metrics: pd.DataFrame, configurations: Mapping[str, str] | None = None) -> str:
    """One sentence: the cluster numbers of each model (of each configuration, mean ± std over its seeds, when
    ``configurations`` maps models to them), computed in the original feature space."""
    groups = metrics.assign(group=metrics["model"].map(lambda m: (configurations or {}).get(m, m)))
    parts = []
    for group, part in groups.groupby("group", sort=False):
        seeds = f" ({len(part)} seeds)" if len(part) > 1 else ""
        parts.append(
            f"{group}{seeds} silhouette {_pm(part['silhouette'], 3)} and {int(part['k'].iloc[0])}-NN accuracy "
            f"{_pm(part['knn_acc'], 1)}%"
        )
    first = metrics.iloc[0]
    return (
        f"t-SNE of the image features of the same {int(first['images'])} test images of {int(first['classes'])} "
        f"classes under each model, coloured by class; in the original feature space: {'; '.join(parts)}."
    )


def finding_tsne(metrics: pd.DataFrame, configurations: Mapping[str, str] | None = None) -> str:
    """The headline: k-NN accuracy and silhouette of the zero-shot features and of each fine-tuned model (each
    configuration's mean over its seeds)."""
    if len(metrics) < 2:
        return ""
    groups = metrics.assign(group=metrics["model"].map(lambda m: (configurations or {}).get(m, m)))
    items = [
        f"{group} {part['knn_acc'].mean():.1f}% (silhouette {part['silhouette'].mean():.3f})"
        for group, part in groups.groupby("group", sort=False)
    ]
    first = metrics.iloc[0]
    return f"Image features, {int(first['k'])}-NN accuracy on {int(first['images'])} test images: " + (
        ", ".join(items) + "."
    )
