"""Paper Fig. 5: t-SNE of the same test images' features, zero-shot beside fine-tuned.

Reads the TSNE and TSNE_METRICS tables of :mod:`analysis.schemas`.

Class colours never contradict class names: when every shown class name holds one colour word ("red circle",
"blue star"), the class is drawn in that colour and its marker stands for the rest of the name (a circle for
"circle", a hollow circle for "ring", a heart for "heart", and markers in a fixed order for other words), so
"red circle" is a red dot. Otherwise the classes take the colour-blind-safe palette.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from figures.paper import against_fig5
from figures.style import PAGE_WIDTH, colours, new_figure, require, styled

# colour words and how they are drawn (matplotlib's tab colours where they exist, legible on white)
COLOUR_WORDS = {
    "red": "#d62728", "green": "#2ca02c", "blue": "#1f77b4", "yellow": "#e8c81a", "orange": "#ff7f0e",
    "purple": "#9467bd", "pink": "#f287c8", "cyan": "#17becf", "brown": "#8c564b", "gray": "#7f7f7f",
    "grey": "#7f7f7f", "black": "#222222", "white": "#ffffff", "magenta": "#d62fd6", "violet": "#8f5fd6",
    "olive": "#bcbd22", "navy": "#1f3a93", "teal": "#138d90", "gold": "#d4a017", "silver": "#b0b0b0",
}  # fmt: skip
# shape words and their markers (hollow: drawn as an outline)
MARKER_WORDS = {"circle": "o", "square": "s", "triangle": "^", "diamond": "D", "star": "*", "cross": "X",
                "plus": "P", "pentagon": "p", "hexagon": "h", "ring": "o", "heart": "$♥$"}  # fmt: skip
HOLLOW = {"ring"}
AREA = {"*": 2.0, "$♥$": 1.6}  # markers that look smaller than a dot of the same area
OTHER_MARKERS = ("v", "<", ">", "d", "8", "H", "P", "p", "h", "s", "^", "D")  # for other words, in this order


@dataclass(frozen=True)
class ClassStyle:
    """How one class is drawn."""

    colour: object
    marker: str = "o"
    hollow: bool = False


def _words(name: str) -> list[str]:
    return name.lower().replace("_", " ").replace("-", " ").split()


def class_styles(classnames: Sequence[str]) -> dict[str, ClassStyle]:
    """Class name -> its colour and marker (module docstring): the colour its name says when every name holds
    exactly one colour word and no two classes would look alike, else the palette (one marker)."""
    named = {}
    for name in classnames:
        found = [w for w in _words(name) if w in COLOUR_WORDS]
        if len(found) != 1:
            named = None
            break
        rest = " ".join(w for w in _words(name) if w != found[0])
        named[name] = (found[0], rest)
    if named:
        others = iter(OTHER_MARKERS)
        markers = {}
        for rest in dict.fromkeys(rest for _, rest in named.values()):
            markers[rest] = MARKER_WORDS.get(rest) or next(others, None)
        styles = {
            name: ClassStyle(COLOUR_WORDS[colour], markers[rest] or "o", rest in HOLLOW)
            for name, (colour, rest) in named.items()
        }
        looks = {(st.colour, st.marker, st.hollow) for st in styles.values()}
        if None not in markers.values() and len(looks) == len(styles):
            return styles
    return {name: ClassStyle(c) for name, c in zip(classnames, colours(len(classnames)), strict=True)}


def _scatter(ax, x, y, style: ClassStyle, label: str | None = None, size: float = 18) -> None:
    size *= AREA.get(style.marker, 1.0)
    if style.hollow:
        ax.scatter(x, y, s=size, marker=style.marker, facecolors="none", edgecolors=style.colour, linewidths=1.0,
                   label=label)  # fmt: skip
    else:  # a thin dark edge keeps light colours (yellow, white) visible on white
        ax.scatter(x, y, s=size, marker=style.marker, color=style.colour, edgecolors="#333333", linewidths=0.25,
                   label=label)  # fmt: skip


def draw_tsne(points: pd.DataFrame, metrics: pd.DataFrame) -> Figure:
    """One scatter per model, each class in the colour and marker of :func:`class_styles`, titled with the
    model's silhouette and k-NN accuracy; the legend below."""
    require(points, "tsne")
    require(metrics, "tsne_metrics")
    models = list(dict.fromkeys(points["model"]))
    classes = points.drop_duplicates("label").sort_values("label")
    styles = class_styles(list(classes["classname"]))
    scores = metrics.set_index("model")
    cols = min(3, len(models))
    rows = math.ceil(len(models) / cols)
    panel = min(4.4, PAGE_WIDTH / cols)
    legend_rows = math.ceil(len(classes) / 5)
    with styled():
        fig = new_figure(panel * cols, (panel + 0.3) * rows + 0.2 * legend_rows + 0.4)
        axes = list(fig.subplots(rows, cols, squeeze=False).flat)  # a list: the loops below both read it
        for ax in axes[len(models) :]:
            ax.set_visible(False)
        for ax, model in zip(axes, models, strict=False):
            part = points[points["model"] == model]
            for label, name in zip(classes["label"], classes["classname"], strict=True):
                mine = part[part["label"] == label]
                _scatter(ax, mine["x"], mine["y"], styles[name])
            m = scores.loc[model]
            ax.set_title(f"{model}\nsilhouette {m['silhouette']:.3f} · {int(m['k'])}-NN acc {m['knn_acc']:.1f}%")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_aspect("equal", adjustable="datalim")
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
        handles = [
            Line2D([], [], linestyle="none", marker=styles[n].marker, markersize=7, label=n,
                   markerfacecolor="none" if styles[n].hollow else styles[n].colour,
                   markeredgecolor=styles[n].colour if styles[n].hollow else "#333333",
                   markeredgewidth=1.0 if styles[n].hollow else 0.25)
            for n in classes["classname"]
        ]  # fmt: skip
        fig.legend(handles=handles, loc="outside lower center", ncol=min(5, len(handles)))
        fig.suptitle(f"t-SNE of image features ({int(metrics['images'].iloc[0])} test images)")
    return fig


def _pm(values: pd.Series, digits: int) -> str:
    mean = f"{values.mean():.{digits}f}"
    return f"{mean} ± {values.std():.{digits}f}" if len(values) > 1 else mean


def colour_rule(classnames: Sequence[str]) -> str:
    """How :func:`class_styles` draws these classes, in words."""
    styles = class_styles(classnames)
    if any(st.marker != "o" or st.hollow for st in styles.values()) or len(classnames) == 1:
        return "each class in the colour its name says, with a marker for the rest of its name"
    named = all(any(w in COLOUR_WORDS for w in _words(n)) for n in classnames)
    return "each class in the colour its name says" if named else "coloured by class"


def caption_tsne(
    metrics: pd.DataFrame,
    configurations: Mapping[str, str] | None = None,
    classnames: Sequence[str] = (),
    of_classes: int | None = None,
) -> str:
    """One sentence: the cluster numbers of each model (of each configuration, mean ± std over its seeds, when
    ``configurations`` maps models to them), computed in the original feature space; which classes are shown
    (``of_classes``: the label space's size, when only some are) and how they are coloured."""
    groups = metrics.assign(group=metrics["model"].map(lambda m: (configurations or {}).get(m, m)))
    parts = []
    for group, part in groups.groupby("group", sort=False):
        seeds = f" ({len(part)} seeds)" if len(part) > 1 else ""
        parts.append(
            f"{group}{seeds} silhouette {_pm(part['silhouette'], 3)} and {int(part['k'].iloc[0])}-NN accuracy "
            f"{_pm(part['knn_acc'], 1)}%"
        )
    first = metrics.iloc[0]
    shown = int(first["classes"])
    which = (
        f" (of the {of_classes}, spread over the label space and their names' words)"
        if of_classes and of_classes > shown
        else ""
    )
    colour = colour_rule(classnames) if len(classnames) else "coloured by class"
    sentence = (
        f"t-SNE of the image features of the same {int(first['images'])} test images of {shown} classes{which} "
        f"under each model, {colour}; in the original feature space: {'; '.join(parts)}."
    )
    means = groups.groupby("group", sort=False)[["knn_acc", "silhouette", "k"]].mean()
    if "zero-shot" in means.index and len(means) > 1:
        tuned = {"fine-tuning" if g == "fine-tuned" else g: means.loc[g] for g in means.index if g != "zero-shot"}
        sentence += " " + against_fig5(means.loc["zero-shot"], tuned)
    return sentence


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
