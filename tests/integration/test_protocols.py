"""The protocols from the command line on fixture benchmark trees: sweeps, transfer, failures."""

from __future__ import annotations

import json

import pytest
from fixture_trees import add_dtd_class, build, build_raw

from clipfit.cli import eval as eval_cli
from clipfit.cli import train
from clipfit.config import resolve

FAST = ["--epochs", "2", "--batch-size", "4", "--num-workers", "0", "--eval-batch-size", "8"]


def _tiny(weights: str) -> list[str]:
    return ["--model", "clipfit-tiny", "--pretrained", weights]


@pytest.mark.slow
def test_base_to_new_sweep_over_two_seeds_then_transfer(tiny_weights, tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "runs"
    add_dtd_class(build(data, "dtd").folder)
    build(data, "eurosat")
    build_raw(data, "caltech101")
    argv = ["--datasets", "dtd", "--data-root", str(data), "--setting", "base2new", "--shots", "2"]
    argv += ["--seeds", "1", "2", "--out", str(out), *_tiny(tiny_weights), *FAST, "-q"]
    assert train.main(argv) == 0
    printed = capsys.readouterr().out
    assert "sweep of 2 runs" in printed and "means over seeds" in printed

    runs = [out / "dtd" / "base2new" / "clipfit" / "shots2" / f"seed{s}" for s in (1, 2)]
    for seed, run in enumerate(runs, 1):
        assert {p.name for p in run.iterdir()} >= {"config.json", "results.json", "checkpoint.safetensors", "log.txt"}
        results = json.loads((run / "results.json").read_text())
        assert [results[k] for k in ("dataset", "setting", "shots", "seed")] == ["dtd", "base2new", 2, seed]
        assert set(results["metrics"]) == {"base_acc", "new_acc", "hm"} == set(results["zero_shot"])
        assert results["comparable"] and results["split_source"] == "split_zhou_DescribableTextures.json"
        assert results["template"] == "a photo of a {}, a type of texture."
        # The seed's few-shot draw was saved beside the split file, as CoOp does (JSON instead of pickle).
        assert (data / "dtd" / "split_fewshot" / f"shot_2-seed_{seed}.json").is_file()
        ckpt = json.loads((run / "checkpoint.json").read_text())
        assert ckpt["classnames"] == ["banded", "blotchy"]  # base = the first ceil(4/2) classes

    # The same command again: both runs are finished, so nothing trains and the same numbers come back,
    # also for a run whose config.json predates the data settings added here.
    config = json.loads((runs[1] / "config.json").read_text())
    del config["config"]["data"]["make_split"], config["config"]["data"]["classnames"]
    (runs[1] / "config.json").write_text(json.dumps(config))
    stamps = [(run / "checkpoint.safetensors").stat().st_mtime_ns for run in runs]
    assert train.main(argv) == 0
    assert [(run / "checkpoint.safetensors").stat().st_mtime_ns for run in runs] == stamps
    assert capsys.readouterr().out == printed

    # Transfer: every class of the targets, with their own names and templates; a random split is not comparable.
    eval_argv = ["--checkpoint", str(runs[0]), "--datasets", "eurosat", "caltech101", "--data-root", str(data)]
    assert eval_cli.main([*eval_argv, "--make-split", "--eval-batch-size", "8", "-q"]) == 0
    eurosat = json.loads((runs[0] / "eval" / "eurosat" / "results.json").read_text())
    assert eurosat["setting"] == "eval" and eurosat["source"]["dataset"] == "dtd"
    assert eurosat["template"] == "a centered satellite photo of {}." and eurosat["comparable"]
    assert set(eurosat["metrics"]) == {"acc"} == set(eurosat["zero_shot"])
    caltech = json.loads((runs[0] / "eval" / "caltech101" / "results.json").read_text())
    assert caltech["comparable"] is False and caltech["split_source"].startswith("random split (--make-split)")
    assert "eurosat" in capsys.readouterr().out


def test_dry_run_resolves_the_data_and_writes_the_few_shot_file(tmp_path, capsys):
    build(tmp_path, "oxford_pets")
    argv = ["--dataset", "oxford_pets", "--data-root", str(tmp_path), "--shots", "4", "--seed", "2", "--dry-run"]
    # few-shot: the miniature has 2 classes, too few for base-to-new (1 base, 1 new class)
    assert train.main([*argv, "--setting", "fewshot", "--model", "clipfit-tiny", "--pretrained", "none"]) == 0
    path = tmp_path / "oxford_pets" / "split_fewshot" / "shot_4-seed_2.json"
    saved = json.loads(path.read_text())
    assert len(saved["train"]) == 8 and len(saved["val"]) == 4  # 2 classes x 4 shots; val capped at min(K, 4)
    out = capsys.readouterr().out
    assert f"few-shot draw: saved {path}" in out and "oxford_pets: 2 classes" in out


def test_a_sweep_goes_on_past_a_dataset_whose_data_is_missing(tmp_path, capsys):
    build(tmp_path, "dtd")
    argv = ["--datasets", "food101", "dtd", "--data-root", str(tmp_path), "--seeds", "1", "2", "--shots", "1"]
    argv += ["--setting", "fewshot"]  # the DTD miniature's 3 classes are too few for base-to-new
    assert train.main([*argv, "--dry-run", "--model", "clipfit-tiny", "--pretrained", "none"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("dataset folder") == 1 and "food-101/\n" in captured.err  # reported once, with its tree
    assert "skipped: data error above" in captured.out and captured.out.count("dry run: data resolved") == 2
    assert {p.name for p in (tmp_path / "dtd" / "split_fewshot").iterdir()} == {
        "shot_1-seed_1.json",
        "shot_1-seed_2.json",
    }


def test_preset_paper_sets_epochs_and_lambda_per_dataset():
    args = train.build_parser().parse_args(
        ["--datasets", "imagenet", "dtd", "eurosat", "--setting", "fewshot", "base2new", "--preset", "paper"]
    )
    configs = [resolve(c) for c in train.run_configs(args)]
    got = {(c.data.dataset, c.data.setting): (c.optim.epochs, c.optim.reg_weight) for c in configs}
    assert got == {
        ("imagenet", "fewshot"): (10, 2.0),
        ("imagenet", "base2new"): (10, 8.0),
        ("dtd", "fewshot"): (100, 8.0),
        ("dtd", "base2new"): (100, 8.0),
        ("eurosat", "fewshot"): (100, 2.0),
        ("eurosat", "base2new"): (100, 8.0),
    }
    # Baselines keep their own objective under the preset: the regulariser is ClipFit's.
    args = train.build_parser().parse_args(["--datasets", "dtd", "--recipes", "clipfit", "coop", "--preset", "paper"])
    lambdas = {c.recipe: resolve(c).optim.reg_weight for c in train.run_configs(args)}
    assert lambdas == {"clipfit": 8.0, "coop": 0.0}


def test_sweep_axes_nest_dataset_setting_shots_seed():
    args = train.build_parser().parse_args(["--datasets", "all", "--shots", "1", "2", "--seeds", "1", "2", "3"])
    configs = train.run_configs(args)
    assert len(configs) == 11 * 2 * 3
    assert [(c.data.shots, c.seed) for c in configs[:4]] == [(1, 1), (1, 2), (1, 3), (2, 1)]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "imagenet_r"], "dataset 'imagenet_r' is test-only"),
        (["--datasets", "dtd", "eurosat", "--run-dir", "x"], "--run-dir names one run, but the flags make a sweep"),
        (["--dataset", "dtd", "--preset", "paper", "--epochs", "3"], "drop --epochs/--reg-weight"),
        (["--dataset", "dtdd"], "unknown dataset 'dtdd'; known datasets:"),
        (["--dataset", "dtd", "--data-root", "/nonexistent"], "data root /nonexistent does not exist"),
    ],
)
def test_cli_errors(argv, message, capsys):
    assert train.main([*argv, "--dry-run", "--model", "clipfit-tiny", "--pretrained", "none"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_split_file_from_the_cli_then_make_split(tmp_path, capsys):
    build_raw(tmp_path, "oxford_pets")
    argv = ["--dataset", "oxford_pets", "--data-root", str(tmp_path), "--dry-run", "--model", "clipfit-tiny"]
    argv += ["--setting", "fewshot"]  # the miniature's 2 classes are too few for base-to-new
    assert train.main([*argv, "--pretrained", "none"]) == 2
    assert "split_zhou_OxfordPets.json not found" in capsys.readouterr().err
    assert train.main([*argv, "--pretrained", "none", "--make-split", "--shots", "1"]) == 0
    assert "random split (--make-split)" in capsys.readouterr().out


def test_an_unreadable_training_image_is_named(tiny_weights, tmp_path, capsys):
    tree = build(tmp_path, "food101")
    for path in (tree.folder / "images" / "apple_pie").glob("train*.jpg"):
        path.write_bytes(b"this is not a jpeg")
    argv = ["--dataset", "food101", "--data-root", str(tmp_path), "--setting", "fewshot", "--shots", "1"]
    assert train.main([*argv, "--out", str(tmp_path / "runs"), *_tiny(tiny_weights), *FAST]) == 2
    err = capsys.readouterr().err
    assert "cannot be read" in err and "apple_pie/train" in err and "Traceback" not in err
