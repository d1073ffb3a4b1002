"""Golden values of the comparative analyses on hand-built numbers: configurations and seeds, change per
group and per value, per class, channels, gradient consistency; and the report's summary and contents."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import schemas
from analysis.channels import channel_tables, concentration
from analysis.configs import configuration_labels, differing_only, over_runs
from analysis.grad_cos import grad_cos_steps, grad_cos_summary, has_grad_cos
from analysis.param_change import combine, configuration_change, family_depth, group_change, param_change
from analysis.per_class import (
    class_configs,
    confusion_change,
    confusion_counts,
    correlations,
    pearson,
    per_class_table,
    spearman,
    worst_classes,
)
from analysis.rep_change import rep_change_configs
from analysis.sources import find_runs
from figures.per_class import caption_per_class

# ----------------------------------------------------------------------------- configurations

BASE = {("recipe",): "clipfit", ("optim", "reg_weight"): 8.0, ("optim", "epochs"): 20, ("optim", "lr"): 0.002}


def _run(**changes) -> dict:
    settings = {**BASE, ("seed",): 1, ("device",): "cpu"}
    settings.update({tuple(k.split("__")): v for k, v in changes.items()})
    return settings


def test_runs_differing_only_in_seed_share_a_configuration_and_labels_name_what_differs():
    runs = [
        _run(),
        _run(seed=2, device="cuda"),  # another seed on another device: the same configuration
        _run(optim__reg_weight=0.0),
        _run(recipe="full", optim__reg_weight=0.0, optim__lr=1e-4),  # full's own lr: implied by the recipe
        _run(optim__epochs=100),
    ]
    labels = configuration_labels(runs, {("device",)})
    assert labels == [
        "clipfit λ=8 20 ep",
        "clipfit λ=8 20 ep",
        "clipfit λ=0 20 ep",
        "full λ=0 20 ep",
        "clipfit λ=8 100 ep",
    ]
    assert configuration_labels(runs[:2], {("device",)}) == ["clipfit", "clipfit"]
    # Fig. 4 right: only the pair that differs in λ and in nothing else
    assert differing_only(runs, ("optim", "reg_weight"), {("device",)}) == [(0, 2)]


def test_mean_and_sample_std_over_runs():
    frame = pd.DataFrame({"checkpoint": ["a", "b", "c"], "configuration": ["x", "x", "y"], "v": [1.0, 3.0, 5.0]})
    stats = over_runs(frame, ["configuration"], ["v"]).set_index("configuration")
    # x: mean (1 + 3) / 2 = 2, sample std sqrt(((1-2)^2 + (3-2)^2) / 1) = sqrt(2); y: one run, std undefined
    assert stats.loc["x", "v_mean"] == 2.0 and stats.loc["x", "v_std"] == pytest.approx(math.sqrt(2))
    assert stats.loc["x", "runs"] == 2 and stats.loc["y", "runs"] == 1 and math.isnan(stats.loc["y", "v_std"])


# ----------------------------------------------------------------------------- change per configuration and group

INIT = {
    "visual.ln_pre.weight": torch.ones(4),
    "visual.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(3, 2),
    "transformer.resblocks.0.mlp.c_proj.bias": torch.zeros(2),
}


def _moved(by: float) -> dict:
    return {name: value + by for name, value in INIT.items()}


def _three_runs() -> pd.DataFrame:
    # seeds 1 and 2 of configuration x moved every value by 1 and 2; configuration y (one run) by 1
    return combine(param_change(INIT, _moved(b), c) for c, b in (("x1", 1.0), ("x2", 2.0), ("y1", 1.0)))


def test_change_over_seeds_and_per_group_and_value():
    table = _three_runs()
    configs, seeds = {"x1": "x", "x2": "x", "y1": "y"}, {"x1": 1, "x2": 2, "y1": 1}
    per_tensor = configuration_change(table, configs, seeds)
    assert list(per_tensor.columns) == list(schemas.PARAM_CONFIGS)
    ln = per_tensor[(per_tensor["configuration"] == "x") & (per_tensor["name"] == "visual.ln_pre.weight")].iloc[0]
    # 4 values moved by 1 and by 2: sq_change 4 and 16 -> mean 10, sample std |16 - 4| / sqrt(2)
    assert (ln["runs"], ln["seeds"], ln["sq_change_mean"]) == (2, "1,2", 10.0)
    assert ln["sq_change_std"] == pytest.approx(12 / math.sqrt(2))
    groups = group_change(table, configs, seeds)
    assert list(groups.columns) == list(schemas.PARAM_GROUPS)
    row = groups.set_index(["configuration", "level", "group"]).loc[("x", "group", "image attn in_proj_weight")]
    # 6 values: sq_change 6 and 24 (mean 15), per value 1 and 4 (mean 2.5, std 3 / sqrt(2))
    assert (row["numel"], row["sq_change_mean"], row["per_value_mean"]) == (6, 15.0, 2.5)
    assert row["per_value_std"] == pytest.approx(3 / math.sqrt(2))
    family = groups.set_index(["configuration", "level", "group"]).loc[("y", "family", "text FFN-out")]
    assert (family["tensors"], family["numel"], family["sq_change_mean"], family["per_value_mean"]) == (1, 2, 2.0, 1.0)


def test_a_whole_model_change_is_placed_in_depth_by_family():
    depth = family_depth(_three_runs().query("checkpoint == 'x2'")).set_index(["tower", "family"])
    assert list(depth.columns) == [c for c in schemas.PARAM_FAMILIES if c not in ("tower", "family")]
    # ln_pre sits before the blocks, the attention in block 0; every value moved by 2: 4 per value
    assert depth.loc[("image", "LN"), "position"] == "pre" and depth.loc[("image", "LN"), "order"] == -1
    assert depth.loc[("image", "attn"), "position"] == "0" and depth.loc[("image", "attn"), "sq_change"] == 24.0
    assert (depth["per_value"] == 4.0).all()


# ----------------------------------------------------------------------------- per class


def _two_classes():
    # class 0 (a): 2 images; zero-shot right on 1, fine-tuned on both. class 1 (b): 3 images; zero-shot right on
    # 1 (the others called a), fine-tuned on 2 (one still called a)
    labels, zero, tuned = [0, 0, 1, 1, 1], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0]
    return labels, zero, tuned, ["a", "b"]


def test_per_class_accuracy_delta_and_confusion_change():
    labels, zero, tuned, names = _two_classes()
    table = per_class_table(labels, zero, tuned, names, [0.9, 0.5], "base", "r1", "x").set_index("classname")
    assert list(table.reset_index()[list(schemas.PER_CLASS)].columns) == list(schemas.PER_CLASS)
    assert (table.loc["a", "zs_acc"], table.loc["a", "ft_acc"], table.loc["a", "delta"]) == (50.0, 100.0, 50.0)
    assert table.loc["b", "zs_acc"] == pytest.approx(100 / 3) and table.loc["b", "delta"] == pytest.approx(100 / 3)
    counts = confusion_counts(labels, zero, tuned, names, "base", "r1", "x")
    configs = class_configs(per_class_table(labels, zero, tuned, names, [0.9, 0.5], "base", "r1", "x"))
    worst = worst_classes(configs, k=1)
    assert worst == {"x": [("base", 1)]}  # b gained least (+33.3 against +50)
    change = confusion_change(counts, worst)
    assert list(change.columns) == list(schemas.CONFUSION_CHANGE)
    # b's images: zero-shot 1 x b, 2 x a; fine-tuned 2 x b, 1 x a
    assert change.set_index("pred_class")[["zs_count", "ft_count", "change"]].to_dict("index") == {
        "b": {"zs_count": 1, "ft_count": 2, "change": 1},
        "a": {"zs_count": 2, "ft_count": 1, "change": -1},
    }


def test_pearson_and_spearman_golden_values():
    # centred x = [-1.5, -.5, .5, 1.5], y = [-1.5, .5, -.5, 1.5]: sum xy = 4, sum x^2 = sum y^2 = 5 -> r = 0.8
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # Spearman is Pearson of the ranks: 10, 20, 30, 1000 has the ranks of 1, 2, 3, 4
    assert spearman([10, 20, 30, 1000], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties share their mean rank: [1, 2, 2, 3] -> [1, 2.5, 2.5, 4], against itself 1
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)
    assert math.isnan(pearson([1, 2], [2, 1])) and math.isnan(pearson([1, 1, 1], [1, 2, 3]))


def test_per_class_over_seeds_and_the_stated_correlation():
    frames = []
    for seed, cos in ((1, [0.9, 0.7, 0.8]), (2, [0.9, 0.7, 0.8])):
        labels, zero = [0, 1, 2, 2], [0, 1, 2, 2]
        tuned = [0, 0, 2, 2] if seed == 1 else [0, 1, 2, 2]  # class 1 lost in seed 1 only
        frames.append(per_class_table(labels, zero, tuned, ["a", "b", "c"], cos, "base", f"s{seed}", "x"))
    configs = class_configs(pd.concat(frames, ignore_index=True)).set_index("classname")
    # b: 100 -> 0 (seed 1) and 100 -> 100 (seed 2): delta mean -50, sample std 50 sqrt(2)
    assert configs.loc["b", "delta_mean"] == -50.0 and configs.loc["b", "delta_std"] == pytest.approx(50 * math.sqrt(2))
    assert configs.loc["b", "runs"] == 2
    corr = correlations(configs.reset_index())
    # delta means [0, -50, 0] against cos [0.9, 0.7, 0.8]: centred [16.7, -33.3, 16.7] and [.1, -.1, 0], sum of
    # products 5, of squares 1666.7 and 0.02: r = 5 / sqrt(33.3) = sqrt(3) / 2; ranks [2.5, 1, 2.5] and [3, 1, 2]:
    # centred [.5, -1, .5] and [1, -1, 0]: 1.5 / sqrt(1.5 * 2) = sqrt(3) / 2 as well
    assert list(corr.columns) == list(schemas.CLASS_CORRELATION)
    assert corr[["pearson", "spearman"]].iloc[0].tolist() == pytest.approx([math.sqrt(3) / 2] * 2)
    caption = caption_per_class(configs.reset_index(), pd.DataFrame(columns=schemas.CONFUSION_CHANGE), corr)
    assert "x (2 seeds): 0 of 3 classes gained, 1 lost" in caption
    assert "over 3 classes: Pearson r = 0.87, Spearman ρ = 0.87" in caption


# ----------------------------------------------------------------------------- channels


def test_channel_concentration_golden_values():
    # one channel of four moved: all the change in the top 1% (one channel) and top 10% (one); Gini (n-1)/n = 3/4
    assert concentration(np.array([0, 0, 0, 2.0])) == {"top1_share": 1.0, "top10_share": 1.0, "gini": 0.75}
    # evenly: each channel 1/4; Gini 0
    assert concentration(np.array([1.0, -1, 1, -1])) == {"top1_share": 0.25, "top10_share": 0.25, "gini": 0.0}
    # 20 channels, d = 3 and 1: shares .9 and .1; top 1% = 1 channel (.9), top 10% = 2 (1.0);
    # Gini = (17 * .1 + 19 * .9) / 20 = 0.94
    twenty = np.zeros(20)
    twenty[:2] = [3.0, 1.0]
    assert concentration(twenty) == pytest.approx({"top1_share": 0.9, "top10_share": 1.0, "gini": 0.94})
    assert all(math.isnan(v) for v in concentration(np.zeros(5)).values())  # an unmoved tensor has no shares


def test_channel_tables_name_the_channels_that_moved_most():
    init = {"visual.ln_pre.bias": torch.zeros(4), "transformer.resblocks.0.mlp.c_proj.bias": torch.ones(3)}
    final = {"visual.ln_pre.bias": torch.tensor([0.0, -0.5, 0.1, 0.0]), "transformer.resblocks.0.mlp.c_proj.bias":
             torch.tensor([1.0, 1.2, 1.0])}  # fmt: skip
    channels, summary = channel_tables(init, final, "r1", "x", max_tensors=1)
    assert list(channels.columns) == list(schemas.CHANNELS)
    assert list(summary.columns) == list(schemas.CHANNEL_CONCENTRATION)
    top = summary.set_index("name").loc["visual.ln_pre.bias"]
    assert (top["top_channel"], top["top_change"], top["sq_change"]) == (1, -0.5, pytest.approx(0.26))
    # only the most-changed tensor's channels are listed (max_tensors=1), ranked by squared change
    assert set(channels["name"]) == {"visual.ln_pre.bias"}
    assert channels.sort_values("rank")["channel"].tolist() == [1, 2, 0, 3]


# ----------------------------------------------------------------------------- gradient consistency


def test_grad_cos_summary_golden_values():
    rows = [{"step": 1, "epoch": 0, "name": "transformer.resblocks.0.mlp.c_proj.bias", "grad_cos": None}]
    rows += [
        {"step": s, "epoch": 0, "name": "transformer.resblocks.0.mlp.c_proj.bias", "grad_cos": c}
        for s, c in ((2, 0.5), (3, 1.0), (4, -0.5), (5, 0.0))
    ]
    assert has_grad_cos(rows) and not has_grad_cos(rows[:1])
    steps = grad_cos_steps(rows, "r1", "x")
    assert list(steps.columns) == list(schemas.GRAD_COS_STEPS) and len(steps) == 4  # the first step has none
    row = grad_cos_summary(steps).iloc[0]
    # mean (0.5 + 1 - 0.5 + 0) / 4 = 0.25; a tenth of 4 records is 1: early 0.5, late 0.0; 2 of 4 positive
    assert (row["records"], row["mean_cos"], row["early_cos"], row["late_cos"], row["positive_share"]) == (
        4, 0.25, 0.5, 0.0, 0.5,
    )  # fmt: skip
    assert grad_cos_steps(rows[:1]).empty  # a run written before grad_cos was logged: no rows, no error


def test_rep_change_over_seeds():
    runs = pd.DataFrame(
        {"checkpoint": ["a", "b"], "configuration": ["x", "x"], "tower": "image", "block": [0, 0], "position": "0",
         "order": 0, "inputs": 10, "cka": [0.9, 0.7], "mean_shift": [0.1, 0.3]}
    )  # fmt: skip
    row = rep_change_configs(runs).iloc[0]
    assert (row["runs"], row["cka_mean"]) == (2, pytest.approx(0.8)) and row["cka_std"] == pytest.approx(0.1414, 1e-3)
    assert (row["mean_shift_mean"], row["mean_shift_std"]) == (pytest.approx(0.2), pytest.approx(0.1414, 1e-3))


def test_a_sweep_folder_stands_for_the_runs_under_it(tmp_path):
    for rel in ("a/seed1", "a/seed2", "b/seed1", "a/seed1/eval/dtd"):
        (tmp_path / rel).mkdir(parents=True)
    for rel in ("a/seed1", "a/seed2", "b/seed1"):
        (tmp_path / rel / "checkpoint.safetensors").write_bytes(b"")
    (tmp_path / "a/seed1/eval/dtd/results.json").write_text("{}")
    found = find_runs([str(tmp_path / "b/seed1"), str(tmp_path)])
    assert found == [str(tmp_path / p) for p in ("b/seed1", "a/seed1", "a/seed2")]  # each once, eval/ left out


def test_a_sweep_folder_whose_runs_were_all_named_before_adds_nothing(tmp_path):
    # runs/sweep/a and then runs/sweep: the folder's only run is named already, the folder itself is no run
    (tmp_path / "sweep/a").mkdir(parents=True)
    (tmp_path / "sweep/a/checkpoint.safetensors").write_bytes(b"")
    assert find_runs([str(tmp_path / "sweep/a"), str(tmp_path / "sweep")]) == [str(tmp_path / "sweep/a")]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert find_runs([str(empty)]) == [str(empty)]  # nothing under it: as given (load_source names what lacks)
