"""The report's figures: what they draw, their colours, captions and type scale (tables made by hand)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from analysis import schemas
from analysis.commands.bundle import write_figure
from analysis.commands.report import duration, report_header
from analysis.outputs import OutputDir
from analysis.tables import layer_frame
from analysis.training_curves import training_curve_configs, training_curves
from analysis.tsne import spread
from clipfit.data import shapes
from clipfit.provenance import versions
from figures.paper import PAPER_FINDING, against_fig5, against_paper
from figures.param_change import caption_param_change
from figures.report import ReportTable, write_report
from figures.style import PAGE_WIDTH, PALETTE, SMALL, TEXT, TITLE, log_axis, new_figure, power_of_ten, styled
from figures.training_curves import caption_training_curves, draw_training_curves
from figures.tsne import OTHER_MARKERS, ClassStyle, class_styles, colour_rule, draw_tsne
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


def test_minor_log_ticks_are_labelled_only_while_at_most_one_power_of_ten_is_in_view():
    # what LogTicks' docstring says: the 2s and 5s only while at most one power of ten lies within the view
    ax = new_figure(3, 2).subplots()
    log_axis(ax)
    minor = ax.yaxis.get_minor_formatter()
    for (low, high), labelled in (((2, 8), True), ((0.5, 5), True), ((0.5, 20), False), ((0.003, 40), False)):
        ax.set_ylim(low, high)
        assert (minor(2.0), minor(5.0), minor(3.0)) == (("2", "5", "") if labelled else ("", "", "")), (low, high)
    assert ax.yaxis.get_major_formatter()(10.0) == "10"


def test_few_shot_panels_are_sized_from_the_page_not_capped_to_it(monkeypatch):
    import figures.results

    asked = []

    def recording(width, height):
        asked.append(width)
        return new_figure(width, height)

    monkeypatch.setattr(figures.results, "new_figure", recording)
    for count in (1, 4, 6):
        rows = [
            {"method": m, "model": "clipfit-tiny", "pretrained": "w", "dataset": f"d{i}", "shots": k, "seeds": 1,
             "acc_mean": 50.0 + k, "acc_std": float("nan"), "comparable": True, "source": ""}
            for i in range(count) for m, k in (("zero-shot", 0), ("clipfit", 2), ("clipfit", 4))
        ]  # fmt: skip
        figures.results.draw_fewshot(pd.DataFrame(rows, columns=list(schemas.FEWSHOT)))
    assert asked[0] == pytest.approx(3.8)  # one panel: as wide as it was
    assert all(width <= PAGE_WIDTH for width in asked), asked  # 4 columns asked 13.4 in, capped silently


# Two seeds of one configuration as clipfit's trainer logs them (steps 10 and 20), a validation row each, and rows
# that carry nothing usable: a null loss and a text accuracy, a row without a step.
SEED1 = [
    {"step": 10, "epoch": 0, "lr": 0.001, "loss": 2.0, "ce": 1.9, "reg": 0.0125, "acc": 50.0},
    {"step": 20, "epoch": 1, "lr": 0.002, "loss": 1.0, "ce": 0.96, "reg": 0.005, "acc": 70.0},
    {"step": 20, "epoch": 1, "val_acc": 60.0},
    {"step": 25, "epoch": 1, "loss": None, "acc": "n/a"},
    {"epoch": 2, "loss": 0.5},
]
SEED2 = [
    {"step": 10, "epoch": 0, "lr": 0.001, "loss": 4.0, "ce": 3.9, "reg": 0.0125, "acc": 30.0},
    {"step": 20, "epoch": 1, "lr": 0.002, "loss": 3.0, "ce": 2.96, "reg": 0.005, "acc": 50.0},
    {"step": 20, "epoch": 1, "val_acc": 40.0},
]


def test_training_curves_read_rows_tolerantly_and_average_seeds_golden_values():
    one = training_curves(SEED1, "seed 1", "clipfit")
    assert list(one.columns) == list(schemas.TRAINING_CURVES)
    # 5 values at step 10 and 5 + val_acc at step 20; the null, the text and the step-less row add nothing
    assert list(zip(one["step"], one["metric"], strict=True)) == [
        (10, "loss"), (10, "ce"), (10, "reg"), (10, "acc"), (10, "lr"),
        (20, "loss"), (20, "ce"), (20, "reg"), (20, "acc"), (20, "val_acc"), (20, "lr"),
    ]  # fmt: skip
    both = pd.concat([one, training_curves(SEED2, "seed 2", "clipfit")], ignore_index=True)
    assert list(training_curve_configs(both).columns) == list(schemas.TRAINING_CURVE_CONFIGS)
    configs = training_curve_configs(both).set_index(["metric", "step"])
    # by hand: loss (2 + 4) / 2 = 3 at step 10, (1 + 3) / 2 = 2 at step 20; sample std sqrt(1 + 1) = 1.41421
    assert configs.loc[("loss", 10), ["runs", "value_mean", "value_std"]].tolist() == pytest.approx([2, 3.0, 2**0.5])
    assert configs.loc[("loss", 20), "value_mean"] == pytest.approx(2.0)
    # acc (50 + 30) / 2 = 40, then 60; val_acc (60 + 40) / 2 = 50 with std sqrt(100 + 100) = 14.1421
    assert configs.loc[("acc", 20), "value_mean"] == pytest.approx(60.0)
    assert configs.loc[("val_acc", 20), ["value_mean", "value_std"]].tolist() == pytest.approx([50.0, 200**0.5])
    caption = caption_training_curves(training_curve_configs(both))
    assert "clipfit (2 seeds): loss 3.000 → 2.000, ce 2.900 → 1.960, reg 0.013 → 0.005" in caption
    assert "training accuracy 40.0% → 60.0% by step 20" in caption
    assert "validation accuracy 50.0% at the last record (best 50.0% at step 20)" in caption
    without = caption_training_curves(training_curve_configs(training_curves(SEED1[:2], "a", "clipfit")))
    assert "no validation accuracy logged" in without
    fig = draw_training_curves(training_curve_configs(both))
    assert [ax.get_title() for ax in fig.axes] == ["training loss", "regulariser", "accuracy"]


def test_tsne_colours_follow_the_colour_words_of_the_class_names():
    styles = class_styles(["red circle", "blue star", "green ring", "yellow heart", "pink blob"])
    assert styles["red circle"] == ClassStyle("#d62728", "o", False)  # matplotlib's tab:red: a red dot
    assert styles["blue star"] == ClassStyle("#1f77b4", "*", False)
    assert styles["green ring"] == ClassStyle("#2ca02c", "o", True)  # a ring is a hollow circle
    assert styles["yellow heart"].marker == "$♥$" and styles["pink blob"].marker == OTHER_MARKERS[0]
    # drawn: the red circle's points are red, the blue star's blue
    points, metrics = _tsne_tables(["red circle", "blue star"])
    fig = draw_tsne(points, metrics)
    faces = [to_hex(c.get_facecolors()[0]) for c in fig.axes[0].collections]
    assert faces == ["#d62728", "#1f77b4"]


def test_tsne_names_without_one_colour_word_each_take_the_palette():
    plain = class_styles(["banded", "dotted", "red striped"])  # one name without a colour word
    assert [s.colour for s in plain.values()] == list(PALETTE[:3]) and {s.marker for s in plain.values()} == {"o"}
    assert class_styles(["red blue square", "green square"])["green square"].colour == PALETTE[1]  # two in one name
    assert colour_rule(["red circle", "blue star"]).startswith("each class in the colour its name says")
    assert colour_rule(["banded", "dotted"]) == "coloured by class"


def test_shown_classes_are_spread_over_the_label_space_and_the_words_of_their_names():
    # the shapes world's base labels are shape-major (8 colours of circle, then of triangle, star, ring): the first 10
    # are two shapes, every 8th label one colour; the spread 4 are 4 shapes in 4 colours, the spread 10 all 4 shapes
    # and all 8 colours
    base = shapes.CLASSNAMES[:32]
    assert {n.split()[1] for n in base[:10]} == {"circle", "triangle"}
    assert [base[i] for i in spread(base, 4)] == ["red circle", "cyan ring", "pink triangle", "purple star"]
    ten = [base[i] for i in spread(base, 10)]
    assert len({n.split()[1] for n in ten}) == 4 and len({n.split()[0] for n in ten}) == 8
    # names without shared words: by hand, 0, then the farthest (31), then the middle of the larger gap (15), ...
    assert spread([f"class{i}" for i in range(32)], 4) == [0, 31, 15, 23]
    assert spread(["a", "b", "c"], 10) == [0, 1, 2]


def _trained(values: dict[str, float]) -> pd.DataFrame:
    """A PARAM_CHANGE-like table of clipfit's tensors of a 4-block model with the given sq_change per name."""
    table = layer_frame(list(values))
    return table.assign(sq_change=[values[n] for n in table["name"]])


def _clipfit(ln: tuple[float, float], ln_1: tuple[float, float], text: tuple[float, ...]) -> pd.DataFrame:
    values = {"visual.ln_pre.weight": ln[0], "visual.ln_pre.bias": ln[1]}
    values |= {
        "visual.transformer.resblocks.0.ln_1.weight": ln_1[0],
        "visual.transformer.resblocks.0.ln_1.bias": ln_1[1],
    }
    values |= {f"transformer.resblocks.{i}.mlp.c_proj.bias": v for i, v in enumerate(text)}
    return _trained(values)


def test_the_caption_says_where_the_result_agrees_with_the_paper_and_where_not():
    # ln_pre 3 + 1 = 4 against 0.ln_1 1 + 1 = 2 (2x); text biases 4, 2, 1, 1: blocks 0-1 hold 6 / 8 = 75%
    agrees = against_paper(_clipfit((3, 1), (1, 1), (4, 2, 1, 1)), "sq_change")
    assert agrees == (
        "as in the paper, the first image LayerNorm (ln_pre) has the most change (4, 2.0× the next, 0.ln_1); "
        "as in the paper, the low-level text biases (blocks 0-1 of 4) hold 75% of the text biases' change, most at "
        "block 0"
    )
    # the other way round: 0.ln_1 moved most, and blocks 2-3 hold 6 / 8 of the text biases' change
    disagrees = against_paper(_clipfit((0.5, 0.5), (3, 1), (1, 1, 2, 4)), "sq_change")
    assert disagrees == (
        "unlike the paper, the image LayerNorm with the most change is 0.ln_1 (4), not the first (ln_pre, 1); "
        "unlike the paper, the high-level text biases (blocks 2-3 of 4) hold 75% of the text biases' change (the "
        "low-level ones 25%), most at block 3"
    )
    gradients = against_paper(
        _clipfit((3, 1), (1, 1), (4, 2, 1, 1)).rename(columns={"sq_change": "g"}), "g", "gradient"
    )
    assert gradients.startswith("in line with it, the first image LayerNorm (ln_pre) has the most squared gradient")
    # the Fig. 3 caption carries it; a recipe with neither part (a text-only attention tensor) gets no sentence
    assert caption_param_change(_clipfit((3, 1), (1, 1), (4, 2, 1, 1)).assign(checkpoint="run")).endswith(
        f"Against the paper's finding that {PAPER_FINDING}: {agrees}."
    )
    assert against_paper(_trained({"transformer.resblocks.0.attn.out_proj.weight": 1.0}), "sq_change") == ""


def test_the_tsne_caption_says_which_way_fine_tuning_moved_the_clusters():
    zero = pd.Series({"knn_acc": 70.0, "silhouette": 0.20, "k": 5})
    better = pd.Series({"knn_acc": 80.0, "silhouette": 0.30, "k": 5})
    mixed = pd.Series({"knn_acc": 75.0, "silhouette": 0.10, "k": 5})
    sentence = against_fig5(zero, {"fine-tuning": better, "clipfit λ=0": mixed})
    assert sentence == (
        "Paper Fig. 5 sets ClipFit's image features beside zero-shot CLIP's; here fine-tuning moves the 5-NN accuracy "
        "70.0% → 80.0% and the silhouette 0.200 → 0.300: the classes separate better by both; clipfit λ=0 moves the "
        "5-NN accuracy 70.0% → 75.0% and the silhouette 0.200 → 0.100: the classes separate better by one measure and "
        "worse by the other."
    )
    assert "worse by both" in against_fig5(better, {"x": zero})


def test_a_measure_unchanged_as_printed_is_called_unchanged_not_worse():
    zero = pd.Series({"knn_acc": 70.0, "silhouette": 0.20, "k": 5})
    # the k-NN accuracy exactly equal, the silhouette up: better by one, the other unchanged
    same_knn = pd.Series({"knn_acc": 70.0, "silhouette": 0.25, "k": 5})
    assert against_fig5(zero, {"x": same_knn}).endswith(
        "the silhouette 0.200 → 0.250: the classes separate better by the silhouette, the 5-NN accuracy unchanged."
    )
    # a difference below the printed precision (70.0% → 70.0%, 0.200 → 0.200) is no change either
    tiny = pd.Series({"knn_acc": 70.01, "silhouette": 0.1999, "k": 5})
    sentence = against_fig5(zero, {"x": tiny})
    assert sentence.endswith("the classes separate as before by both (unchanged at this precision).")
    down = pd.Series({"knn_acc": 65.0, "silhouette": 0.20, "k": 5})
    assert "separate worse by the 5-NN accuracy, the silhouette unchanged" in against_fig5(zero, {"x": down})


def _run(seconds: float | None) -> SimpleNamespace:
    """What report_header reads of a source: no run directory, the checkpoint's train_seconds."""
    meta = {} if seconds is None else {"train_seconds": seconds}
    return SimpleNamespace(run_dir=None, ckpt=SimpleNamespace(meta=meta))


def test_the_header_names_date_versions_machine_and_each_runs_training_time(tmp_path):
    assert [duration(s) for s in (81.56, 750.0, 3 * 3600.0, None)] == ["81.6 s", "12.5 min", "3.0 h", "-"]
    header = dict(report_header([_run(81.56), _run(None)], ["clipfit", "ln-tuning"]))
    assert list(header) == ["Generated", "Software", "Report made on", "Training time"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d \S+", header["Generated"])
    soft = versions()
    assert header["Software"] == (
        f"clipfit {soft['clipfit']}, torch {soft['torch']}, open_clip {soft['open_clip']}, Python {soft['python']}"
    )
    assert f"{os.cpu_count()} cores; " in header["Report made on"]
    assert header["Training time"] == "clipfit 81.6 s, ln-tuning -"
    # a sweep: the total and the range, the runs table lists each
    many = dict(report_header([_run(60.0 * i) for i in range(1, 8)], [f"r{i}" for i in range(7)]))
    assert many["Training time"] == "7 runs, 28.0 min in total, 60.0 s to 7.0 min each (per run: the runs table)"
    # rendered under the title, in both files and the manifest
    runs = ReportTable("runs", "Runs", ["Run"], [["x"]])
    index, markdown = write_report(tmp_path / "r", "title", ["intro"], runs, [], [], header=list(header.items()))
    assert "<dt>Training time</dt><dd>clipfit 81.6 s, ln-tuning -</dd>" in index.read_text()
    assert "**Training time:** clipfit 81.6 s, ln-tuning -" in markdown.read_text()
    assert json.loads((tmp_path / "r" / "report.json").read_text())["header"] == header
