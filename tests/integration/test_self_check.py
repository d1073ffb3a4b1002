"""The zero-shot self-check against published numbers, with a fake "known" model on a fixture benchmark.

The published numbers of a model become known to clipfit through :data:`clipfit.reference.REFERENCES`;
here clipfit-tiny with a local weights file is registered with numbers that match what it measures on
a DTD fixture tree, then with numbers 5 points off. DTD also checks the published protocol's own
template ("{} texture."), which differs from DTD's fine-tuning template.
"""

from __future__ import annotations

import json
import logging

import pytest
from fixture_trees import add_dtd_class, build

from clipfit import reference
from clipfit.cli import eval as eval_cli
from clipfit.cli import train

FAST = ["--epochs", "1", "--warmup-epochs", "0", "--batch-size", "4", "--num-workers", "0", "--eval-batch-size", "8"]


def _register(monkeypatch, weights: str, base2new: dict, all_classes: dict | None = None) -> None:
    known = reference.Reference(
        name="tiny test model",
        models=frozenset({("clipfit-tiny", weights)}),
        activation="gelu",
        source="this test",
        base2new=base2new,
        all_classes=all_classes or {},
    )
    monkeypatch.setattr(reference, "REFERENCES", [known])


def _run(tiny_weights, tmp_path, name: str) -> dict:
    data = tmp_path / "data"
    if not data.exists():
        add_dtd_class(build(data, "dtd").folder)  # base-to-new: 2 base and 2 new classes
    run = tmp_path / name
    argv = ["--dataset", "dtd", "--data-root", str(data), "--shots", "2", "--model", "clipfit-tiny"]
    assert train.main([*argv, "--pretrained", tiny_weights, "--run-dir", str(run), *FAST, "-q"]) == 0
    return json.loads((run / "results.json").read_text())


def test_matching_and_mismatching_published_numbers(tiny_weights, tmp_path, monkeypatch, capsys):
    # without published numbers there is nothing to check
    plain = _run(tiny_weights, tmp_path, "plain")
    assert "self_check" not in plain
    # DTD's published zero-shot numbers use CoOp's ZeroshotCLIP template, recorded beside the run's own
    published = plain["zero_shot_published"]
    assert published["template"] == "{} texture." and set(published["metrics"]) == {"base_acc", "new_acc", "hm"}
    measured = published["metrics"]

    near = {k: v + 0.5 for k, v in measured.items()}
    _register(monkeypatch, tiny_weights, {"dtd": (near["base_acc"], near["new_acc"], near["hm"])})
    good = _run(tiny_weights, tmp_path, "good")
    assert "points off" not in capsys.readouterr().err
    check = good["self_check"]
    assert check["ok"] and check["template"] == "{} texture." and check["comparable"]
    assert check["difference"] == pytest.approx({k: -0.5 for k in measured}, abs=1e-6)
    assert "self-check against tiny test model: within 1 point" in train_table(tmp_path / "good", capsys)

    far = {k: v + 5 for k, v in measured.items()}
    _register(monkeypatch, tiny_weights, {"dtd": (far["base_acc"], far["new_acc"], far["hm"])})
    bad = _run(tiny_weights, tmp_path, "bad")
    assert not bad["self_check"]["ok"] and bad["self_check"]["difference"]["hm"] == pytest.approx(-5.0, abs=1e-6)
    warning = capsys.readouterr().err
    assert "zero-shot on dtd is 5.00 points off the published tiny test model numbers" in warning
    for cause in ("activation", "template", "preprocessing", "split", "weights"):
        assert cause in warning
    # the fine-tuned numbers are the same run's: only the check differs
    assert bad["metrics"] == good["metrics"] == plain["metrics"]


def train_table(run_dir, capsys) -> str:
    """What clipfit-train prints for a finished run (it returns the results without training again)."""
    capsys.readouterr()
    assert train.main(["--resume", str(run_dir)]) == 0
    return capsys.readouterr().out


def test_transfer_targets_are_checked_on_all_classes(tiny_weights, tmp_path, monkeypatch):
    plain = _run(tiny_weights, tmp_path, "source")
    target = tmp_path / "eval"
    argv = ["--checkpoint", str(tmp_path / "source"), "--datasets", "dtd", "--data-root", str(tmp_path / "data")]
    assert eval_cli.main([*argv, "--out", str(target), "--eval-batch-size", "8", "-q"]) == 0
    first = json.loads((target / "dtd" / "results.json").read_text())
    acc = first["zero_shot_published"]["metrics"]["acc"]
    _register(monkeypatch, tiny_weights, {}, {"dtd": acc + 3})
    assert eval_cli.main([*argv, "--out", str(target), "--eval-batch-size", "8", "-q"]) == 0
    checked = json.loads((target / "dtd" / "results.json").read_text())["self_check"]
    assert checked["published"] == {"acc": pytest.approx(acc + 3)} and not checked["ok"]
    assert plain["setting"] == "base2new"


def test_a_missing_measured_number_is_shown_as_n_a_not_a_crash(monkeypatch, caplog):
    _register(monkeypatch, "w.safetensors", {"dtd": (50.0, 40.0, 44.44)})
    with caplog.at_level(logging.INFO, logger="clipfit"):
        check = reference.self_check(
            "clipfit-tiny", "w.safetensors", "gelu", "dtd", "base2new", True,
            {"base_acc": 50.5, "new_acc": None, "hm": None}, "a photo of a {}.",
        )  # fmt: skip
    assert check is not None and check["difference"] == {"base_acc": 0.5}
    assert "base_acc 50.50 vs 50.00 (+0.50), new_acc n/a vs 40.00, hm n/a vs 44.44" in caplog.text
