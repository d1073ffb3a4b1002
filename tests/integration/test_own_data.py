"""Your own images as a user expects them: every class trained and tested, every image with ``--shots all``,
validation accuracy each epoch (without changing what is trained), and base-to-new still on request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixture_trees import image
from safetensors.torch import load_file

from clipfit.cli import train
from clipfit.rundir import METRICS_FILE, read_jsonl

CLASSES = ("golden_retriever", "tabby_cat", "red_fox", "barn_owl")


def _folder(root: Path, n: int = 10) -> Path:
    """Four class folders of ``n`` images each: split 50/20/30 into 5 train, 2 val, 3 test per class."""
    for label, name in enumerate(CLASSES):
        for i in range(n):
            image(root / name / f"img{i:03d}.png", label)
    return root


@pytest.fixture
def pets(tmp_path, clipfit_cache) -> Path:
    return _folder(tmp_path / "pets")


def _run(tiny_argv, out: Path, *extra: str, **flags) -> Path:
    """Train into ``out`` with clipfit-train's default run directory; returns it (the one folder under ``out``)."""
    argv = tiny_argv(out, *extra, **flags)
    argv = [*argv[: argv.index("--run-dir")], "--out", str(out), "-q"]
    assert train.main(argv) == 0
    (results,) = out.rglob("results.json")
    return results.parent


def test_a_folder_trains_every_class_on_every_image_and_validates_each_epoch(tiny_argv, pets, tmp_path):
    run = _run(tiny_argv, tmp_path / "runs", dataset=f"folder:{pets}", shots="all", epochs=2)
    assert run.relative_to(tmp_path / "runs").parts == ("folder-pets", "fewshot", "clipfit", "shotsall", "seed1")
    results = json.loads((run / "results.json").read_text())
    assert results["setting"] == "fewshot" and results["shots"] == "all" and set(results["metrics"]) == {"acc"}
    ckpt = json.loads((run / "checkpoint.json").read_text())
    assert ckpt["classnames"] == sorted(CLASSES)  # all four (folder names, sorted; "_" is a space in prompts)
    rows = read_jsonl(run / METRICS_FILE)
    # --shots all: the 5 training images of each class (50% of 10), 20 images in one step of batch 32 per epoch
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["data"]["shots"] == "all" and config["config"]["val_every"] == 1
    val = [r for r in rows if "val_acc" in r]
    assert [r["epoch"] for r in val] == [0, 1] and all(0 <= r["val_acc"] <= 100 for r in val)
    summary = results["validation"]
    assert summary["last_acc"] == val[-1]["val_acc"] and summary["epochs"] == [1, 2]
    assert summary["best_acc"] == max(r["val_acc"] for r in val)
    assert "shots:all" in results["signature"] and "setting:fewshot" in results["signature"]


def test_base_to_new_stays_available_on_a_folder(tiny_argv, pets, tmp_path):
    run = _run(tiny_argv, tmp_path / "runs", dataset=f"folder:{pets}", setting="base2new", val_every=0, epochs=2)
    results = json.loads((run / "results.json").read_text())
    assert results["setting"] == "base2new" and set(results["metrics"]) == {"base_acc", "new_acc", "hm"}
    assert "validation" not in results and not [r for r in read_jsonl(run / METRICS_FILE) if "val_acc" in r]


def test_validation_changes_nothing_that_is_trained(tiny_argv, tmp_path):
    # the shapes world validates never by default; asked every epoch, the run must train exactly as without
    plain = _run(tiny_argv, tmp_path / "plain", epochs=2)
    validated = _run(tiny_argv, tmp_path / "validated", val_every=1, epochs=2)
    assert plain.relative_to(tmp_path / "plain").parts[:2] == ("shapes", "base2new")  # the benchmark default
    a, b = load_file(plain / "checkpoint.safetensors"), load_file(validated / "checkpoint.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    results = [json.loads((run / "results.json").read_text()) for run in (plain, validated)]
    assert results[0]["metrics"] == results[1]["metrics"]
    assert len([r for r in read_jsonl(validated / METRICS_FILE) if "val_acc" in r]) == 2


@pytest.mark.parametrize("value", ["0", "some", "-3"])
def test_shots_must_be_a_count_or_all(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        train.main(["--shots", value, "--dry-run"])
    assert exit_.value.code == 2 and "all" in capsys.readouterr().err
