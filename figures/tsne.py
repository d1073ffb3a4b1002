"""Paper Fig. 5: t-SNE of the same test images' features, zero-shot beside fine-tuned.

Reads the TSNE and TSNE_METRICS tables of :mod:`analysis.schemas`.
"""

from __future__ import annotations

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
    with styled():
        fig = new_figure(4.2 * len(models) + 1.8, 4.4)
        axes = fig.subplots(1, len(models), squeeze=False)[0]
        for ax, model in zip(axes, models, strict=True):
            part = points[points["model"] == model]
            for label, name in zip(classes["label"], classes["classname"], strict=True):
                mine = part[part["label"] == label]
                ax.scatter(mine["x"], mine["y"], s=9, color=palette[label], label=name, linewidths=0)
            m = scores.loc[model]
            ax.set_title(f"{model}\nsilhouette {m['silhouette']:.3f} · {int(m['k'])}-NN acc {m['knn_acc']:.1f}%")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        handles, labels = axes[-1].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", markerscale=2, fontsize=7)
        fig.suptitle(f"t-SNE of image features ({int(metrics['images'].iloc[0])} test images)")
    return fig


def caption_tsne(metrics: pd.DataFrame) -> str:
    """One sentence: the cluster numbers of each model, computed in the original feature space."""
    parts = [
        f"{row['model']} silhouette {row['silhouette']:.3f} and {int(row['k'])}-NN accuracy {row['knn_acc']:.1f}%"
        for _, row in metrics.iterrows()
    ]
    first = metrics.iloc[0]
    return (
        f"t-SNE of the image features of the same {int(first['images'])} test images of {int(first['classes'])} "
        f"classes under each model, coloured by class; in the original feature space: {'; '.join(parts)}."
    )
