"""benchmarks/eval_cache.py and benchmarks/sweep.py run end to end in smoke mode; no timing is asserted.

What is asserted does not depend on the machine: every variant ran, the accuracies of the PIL variants agree,
the cache pass decoded nothing, and the parallel sweep printed the sequential sweep's table.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    """benchmarks/ holds scripts: import one by path."""
    module_name = f"benchmark_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def test_eval_cache_smoke_run_reports_every_variant_with_one_accuracy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIPFIT_CACHE", str(tmp_path / "unused"))  # the script sets its own; restored after
    out = tmp_path / "bench.json"
    assert _load("eval_cache").main(["--smoke", "--num-workers", "0", "--data", str(tmp_path), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cache / JPEG" in printed and "accuracies of the PIL variants agree" in printed
    record = json.loads(out.read_text())
    assert set(record["images_per_s"]) == {
        "clipfit, JPEG",
        "clipfit, first pass",
        "clipfit, cache",
        "plain open_clip loop",
        "CLIP_benchmark",
    }
    assert len(set(record["accuracy"].values())) == 1
    assert record["stats"]["clipfit, cache"] == {"cached": 24}
    assert record["stats"]["clipfit, first pass"] == {"decoded": 24, "built": 1}
    assert record["stats"]["clipfit, JPEG"] == {"decoded": 24}


@pytest.mark.slow
def test_sweep_smoke_run_gives_the_sequential_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--smoke", "--cells", "2", "--epochs", "2", "--shots", "1", "--model", "clipfit-tiny"]
    argv += ["--pretrained", "none", "--threads", "1"]
    assert _load("sweep").main([*argv, "--out", str(tmp_path / "runs"), "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["tables_identical"] and set(record["median_s"]) == {"sequential", "2 workers"}
    assert record["tensors_differing"][0] == 0  # one thread per process in both: bit for bit
    assert "sweep of 2 runs" in record["table"][0]
