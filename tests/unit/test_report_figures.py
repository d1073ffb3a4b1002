"""The report's figures: what they draw, their colours, captions and type scale (tables made by hand)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

from analysis.commands.bundle import write_figure
from analysis.outputs import OutputDir
from figures.report import ReportTable, write_report
from figures.style import PAGE_WIDTH, SMALL, TEXT, TITLE, new_figure, power_of_ten, styled
from figures.tsne import draw_tsne
from tests.report_checks import assert_one_type_scale, displayed_font_sizes


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


def _one_figure_report(tmp_path: Path, figure: Figure) -> Path:
    out = OutputDir(tmp_path / "report" / "tsne", ["tsne"], "tsne")
    entry = write_figure(out, "tsne", pd.DataFrame({"a": [1]}), figure, "t-SNE", "A caption.", ["model:x"])
    runs = ReportTable("runs", "Runs", ["Run"], [["x"]])
    write_report(tmp_path / "report", "title", [], runs, [], [entry])
    return tmp_path / "report"


def test_a_figure_is_shown_at_its_drawn_size_so_its_labels_keep_their_points(tmp_path):
    points, metrics = _tsne_tables(["red circle", "blue star"])
    report = _one_figure_report(tmp_path, draw_tsne(points, metrics))
    sizes = displayed_font_sizes(report)["tsne"]
    assert sorted({round(s, 2) for s in sizes}) == [SMALL, TEXT, TITLE]  # 8 / 9 / 10 pt, as figures.style says
    assert_one_type_scale(report)


def test_a_figure_wider_than_the_page_would_shrink_its_labels_and_is_caught(tmp_path):
    # drawn at 17 in (as per-class once was) with 8-pt ticks: the page shows it 1150 px wide, the ticks at 5.6 pt
    wide = Figure(figsize=(17, 4))
    with styled():
        wide.subplots().plot([0, 1], [0, 1])
    report = _one_figure_report(tmp_path, wide)
    assert min(displayed_font_sizes(report)["tsne"]) == pytest.approx(8 * 1150 / (17 * 96))
    with pytest.raises(AssertionError, match="text shown outside"):
        assert_one_type_scale(report)


def test_new_figure_never_exceeds_the_page_and_log_ticks_are_plain_text():
    assert new_figure(17, 4).get_figwidth() == PAGE_WIDTH and new_figure(6, 4).get_figwidth() == 6
    assert PAGE_WIDTH * 96 <= 1150  # the page's column (figures.report.CONTENT_PX)
    labels = [power_of_ten(v) for v in (1e-12, 2e-4, 0.001, 0.01, 0.5, 1, 100, 1000, 3e5)]
    assert labels == ["10⁻¹²", "2×10⁻⁴", "10⁻³", "0.01", "0.5", "1", "100", "10³", "3×10⁵"]
