"""The report's figures: what they draw, their colours, captions and type scale (tables made by hand)."""

from __future__ import annotations

import pandas as pd

from figures.tsne import draw_tsne


def _tsne_tables(classnames: list[str], per_class: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [
        {"model": model, "index": i, "label": label, "classname": name, "x": float(i), "y": float(label)}
        for model in ("zero-shot", "fine-tuned")
        for label, name in enumerate(classnames)
        for i in range(per_class)
    ]
    metrics = pd.DataFrame(
        [
            {"model": m, "images": per_class * len(classnames), "classes": len(classnames), "silhouette": s,
             "knn_acc": a, "k": 5}
            for m, s, a in (("zero-shot", 0.2, 70.0), ("fine-tuned", 0.3, 80.0))
        ]
    )  # fmt: skip
    return pd.DataFrame(rows), metrics


def test_tsne_draws_every_point_of_every_model():
    # (the panels of an earlier version were empty: the axes iterator was used up before the scatter loop)
    points, metrics = _tsne_tables(["red circle", "blue star"])
    fig = draw_tsne(points, metrics)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [len(panels), *[sum(len(c.get_offsets()) for c in ax.collections) for ax in panels]] == [2, 6, 6]
    assert panels[0].get_title().startswith("zero-shot\nsilhouette 0.200")
