"""The command lines: exact dry-run output, clear errors, and clipfit-eval."""

from __future__ import annotations

import json

import pytest

from clipfit.cli import eval as eval_cli
from clipfit.cli import train

DRY_RUN_LINE = "trainable params: 46,080 || all params: 149,620,737 || trainable%: 0.0308"


def test_vit_b16_dry_run_prints_exactly_the_standard_line(capsys):
    assert train.main(["--model", "ViT-B-16", "--pretrained", "none", "--dry-run"]) == 0
    assert capsys.readouterr().out == DRY_RUN_LINE + "\n"


def test_dry_run_with_a_dataset_also_resolves_the_data(capsys):
    assert train.main(["--dataset", "shapes", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("trainable params: 3,072 || all params: 7,980,673")
    assert "few-shot draw: 512 train / 128 val; base: 32 classes, new: 32 classes" in out


def test_resnet_image_tower_is_a_clear_error(capsys):
    assert train.main(["--model", "RN50", "--pretrained", "none", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "selects no parameters in the image tower (ModifiedResNet)" in err and "Traceback" not in err


def test_unknown_dataset_lists_the_known_ones(capsys):
    assert train.main(["--dataset", "shapez", "--model", "clipfit-tiny", "--pretrained", "none", "--dry-run"]) == 2
    assert "unknown dataset 'shapez'; known datasets: shapes" in capsys.readouterr().err


def test_template_without_a_slot_is_refused(capsys):
    assert train.main(["--dataset", "shapes", "--template", "a photo", "--dry-run"]) == 2
    assert "exactly one '{}'" in capsys.readouterr().err


def test_bad_numbers_are_refused(capsys):
    assert train.main(["--epochs", "0", "--dry-run"]) == 2
    assert "epochs must be at least 1" in capsys.readouterr().err
    assert train.main(["--checkpoint-every", "0", "--dry-run"]) == 2
    assert "checkpoint every must be at least 1, got 0" in capsys.readouterr().err
    assert train.main(["--dry-run", "--device", "gpu"]) == 2
    assert "unknown device 'gpu'; expected auto, cpu, cuda or cuda:N" in capsys.readouterr().err


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert train.main(["--resume", str(tmp_path)]) == 2
    assert "no config.json there" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_on_its_own_data_and_on_a_target(train_tiny, tmp_path, capsys):
    run_dir, trained = train_tiny(tmp_path / "run", shots=1, epochs=2)
    capsys.readouterr()
    assert eval_cli.main(["--checkpoint", str(run_dir), "--max-eval-images", "64", "-q"]) == 0
    table = capsys.readouterr().out
    assert f"{trained['metrics']['base_acc']:8.2f}" in table  # the same numbers as at the end of training
    assert (
        eval_cli.main(["--checkpoint", str(run_dir), "--datasets", "shapes-pretrain", "--max-eval-images", "64", "-q"])
        == 0
    )
    results_file = run_dir / "eval" / "shapes-pretrain" / "results.json"
    assert f"{results_file}" in capsys.readouterr().out  # the real path of every target, not <dataset>
    result = json.loads(results_file.read_text())
    assert result["setting"] == "eval" and set(result["metrics"]) == {"acc"} and set(result["zero_shot"]) == {"acc"}
    assert result["source"]["dataset"] == "shapes" and result["signature"].startswith("model:clipfit-tiny")


def test_eval_of_a_missing_checkpoint(tmp_path, capsys):
    assert eval_cli.main(["--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "no clipfit checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_a_sweep_and_an_evaluation_on_targets_end_with_the_next_command(shared_tiny_weights, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["--dataset", "shapes", "--model", "clipfit-tiny", "--pretrained", shared_tiny_weights, "--shots", "1"]
    argv += ["--epochs", "2", "--max-eval-images", "32", "--seeds", "1", "2", "--out", str(out)]
    assert train.main(argv) == 0
    assert f"next:\n  clipfit-analyze results {out}\n" in capsys.readouterr().out  # the tables over both seeds
    run = out / "shapes" / "base2new" / "clipfit" / "shots1" / "seed1"
    assert eval_cli.main(["--checkpoint", str(run), "--datasets", "shapes-pretrain", "--max-eval-images", "32"]) == 0
    assert f"next:\n  clipfit-analyze results {run / 'eval'}\n" in capsys.readouterr().out
