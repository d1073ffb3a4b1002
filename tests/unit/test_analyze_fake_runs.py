"""clipfit-analyze on run directories written without training (tests/trained_runs.py): the seconds-cheap checks
of what the commands make of the checkpoints alone."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from trained_runs import fake_run

from analysis.cli import main
from analysis.commands.common import Common
from analysis.commands.param_change import ParamChangeOptions, run_param_change
from analysis.commands.report import _results_finding
from analysis.results import read_runs
from clipfit.models import build_model


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    from safetensors.torch import save_file

    torch.manual_seed(1234)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in build_model("clipfit-tiny", "none").model.state_dict().items()}, path)
    return str(path)


def test_the_pooled_seeds_caption_names_the_measure_the_figure_draws(weights, tmp_path):
    # two runs of one configuration: the figure draws their mean of --measure l2_change, and so does the caption
    runs = [str(fake_run(tmp_path / name, weights, noise=noise)) for name, noise in (("a", 0.2), ("b", 0.3))]
    figures = run_param_change(ParamChangeOptions(runs, measure="l2_change"), Common(tmp_path / "pc", []))
    pooled = next(f for f in figures if f.key == "param_change")
    assert "seeds pooled" in pooled.title
    assert pooled.caption.startswith("Per-layer l2 change, mean ± sample std over the seeds")


def _report(paths: list[Path], out: Path, *extra: str) -> dict:
    assert main(["report", *map(str, paths), "--out", str(out), "--no-data-passes", *extra]) == 0
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("recipe", ["coop", "kgcoop", "clip-adapter"])
def test_a_report_of_a_recipe_without_1d_tensors_is_written_with_a_note_on_channels(weights, tmp_path, recipe):
    run = fake_run(tmp_path / "runs" / recipe, weights, recipe)
    manifest = _report([run], tmp_path / "report")
    keys = [f["key"] for f in manifest["figures"]]
    assert "channels" not in keys and "param_change" in keys and "results_base2new" in keys
    assert any("No 1-D tensor" in note and str(run) in note for note in manifest["notes"])


def test_a_sweep_with_a_coop_run_among_others_keeps_the_channels_of_the_others(weights, tmp_path):
    sweep = tmp_path / "sweep"
    clipfit, coop = fake_run(sweep / "clipfit", weights), fake_run(sweep / "coop", weights, "coop")
    manifest = _report([sweep], tmp_path / "report")
    assert "channels" in [f["key"] for f in manifest["figures"]]
    concentration = pd.read_csv(tmp_path / "report" / "channels" / "channel_concentration.csv")
    assert len(concentration) == 14 and concentration["checkpoint"].nunique() == 1  # clipfit's 14 tensors only
    assert any(str(coop) in note and "no channels" in note for note in manifest["notes"])
    assert not any(str(clipfit) in note and "no channels" in note for note in manifest["notes"])


def _results(folder: Path, recipe: str, shots, acc: float, zero: float, dataset: str = "shapes") -> None:
    """A few-shot results.json as clipfit-train writes it (the fields read_runs reads)."""
    folder.mkdir(parents=True)
    record = {"dataset": dataset, "setting": "fewshot", "recipe": recipe, "model": "clipfit-tiny", "pretrained": "w",
              "shots": shots, "seed": 1, "metrics": {"acc": acc}, "zero_shot": {"acc": zero}}  # fmt: skip
    (folder / "results.json").write_text(json.dumps(record))


def test_the_summary_line_names_zero_shot_and_words_all_shots_as_the_caption_does(tmp_path):
    _results(tmp_path / "a", "clipfit", 2, 61.0, 41.0)
    _results(tmp_path / "b", "clipfit", "all", 70.0, 41.0)
    line = _results_finding(read_runs(tmp_path))
    assert line == "Results: shapes few-shot accuracy: zero-shot 41.00; at 2 shots clipfit 61.00; with every " \
        "training image clipfit 70.00."  # fmt: skip


def test_a_report_over_runs_of_two_datasets_draws_a_tsne_for_each(weights, tmp_path):
    sweep = tmp_path / "sweep"
    fake_run(sweep / "a-shapes", weights)
    other = fake_run(sweep / "b-pretrain", weights, noise=0.3)
    config = json.loads((other / "config.json").read_text())
    config["config"]["data"]["dataset"] = "shapes-pretrain"  # as if trained on the shapes world's other domain
    (other / "config.json").write_text(json.dumps(config))
    out = tmp_path / "report"
    small = ["--max-images", "24", "--max-classes", "4", "--class-images", "16", "--batches", "1"]
    assert main(["report", str(sweep), "--out", str(out), *small]) == 0
    manifest = json.loads((out / "report.json").read_text())
    titles = {f["key"]: f["title"] for f in manifest["figures"]}
    assert "tsne" in titles and "tsne_shapes-pretrain" in titles  # the second dataset keyed apart
    assert "shapes-pretrain" in titles["tsne_shapes-pretrain"] and "shapes-pretrain" not in titles["tsne"]
    assert list(pd.read_csv(out / "tsne-shapes-pretrain" / "tsne_metrics.csv")["model"]) == ["zero-shot", "fine-tuned"]
    assert any("a t-SNE for each (shapes, shapes-pretrain)" in note for note in manifest["notes"])
