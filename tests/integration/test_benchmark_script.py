"""benchmarks/step.py and crops.py run end to end in smoke mode (tiny model, a few images); no timing is asserted.

What is asserted does not depend on the machine: FLOP counts, the memory accounting, the table.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "step.py"


def _load():
    """benchmarks/ holds scripts, not a package: import the file by path."""
    if "benchmark_step" not in sys.modules:
        spec = importlib.util.spec_from_file_location("benchmark_step", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["benchmark_step"]


def test_live_bytes_counts_what_is_alive_at_the_peak():
    bench = _load()
    weights = torch.zeros(1000)
    with bench.LiveBytes([weights]) as live:
        view = weights[:10].t()  # a view of an existing storage: nothing new
        weights.add_(1.0)  # in place: nothing new
        a = torch.ones(1000)  # 4000 bytes
        b = a * 2  # 8000 alive
        del a, b  # freed
        c = torch.ones(500, dtype=torch.float64)  # 4000
    assert live.peak == 8000 and live.live == 4000
    del c, view
    assert live.live == 0


def test_smoke_run_reports_every_variant(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert _load().main(["--smoke", "--grad-checkpointing", "all", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for row in ("clipfit", "reference", "full fine-tuning", "forward only", "reference / clipfit", "eval clipfit"):
        assert row in printed
    record = json.loads(out.read_text())
    steps = record["steps"]
    assert set(steps) == {
        "clipfit",
        "reference",
        "full fine-tuning",
        "forward only",
        "coop",
        "cocoop",
        "clipfit --grad-checkpointing all",
    }
    assert all(s["median_s"] > 0 and s["peak_mib"] > 0 for s in steps.values())
    assert record["cut_length"] < record["full_length"] == 77
    # Work and memory, independent of the machine: the released way costs more than clipfit's step,
    # which costs more than its forward; full fine-tuning holds gradients and momentum of every weight.
    gflop = {k: s["gflop"] for k, s in steps.items()}
    assert gflop["reference"] > 2 * gflop["clipfit"] > 2 * gflop["forward only"]
    assert gflop["clipfit --grad-checkpointing all"] > gflop["clipfit"]  # the recomputed forward
    peak = {k: s["peak_mib"] for k, s in steps.items()}
    assert peak["reference"] > peak["clipfit"] > peak["forward only"] and peak["full fine-tuning"] > peak["clipfit"]
    assert peak["clipfit --grad-checkpointing all"] < peak["clipfit"]
    assert set(record["ratios"]) == {"reference / clipfit", "clipfit / forward only", "eval clipfit / plain"}
    assert set(record["evaluation_images_per_s"]) == {"clipfit", "plain open_clip loop"}


CROPS = SCRIPT.parent / "crops.py"


def test_crops_smoke_run_reports_both_pipelines(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("benchmark_crops", CROPS)
    crops = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = crops  # dataclasses look their module up there
    spec.loader.exec_module(crops)
    out = tmp_path / "crops.json"
    assert crops.main(["--smoke", "--fixture", str(tmp_path / "fixture"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "upsampled >= 2x" in printed and "16-shot ImageNet" in printed
    record = json.loads(out.read_text())
    assert {(r["cache"], r["workers"]) for r in record["loaders"]} == {
        (c, w) for c in ("none", "crop-size") for w in (0, 1)
    }
    assert all(r["images_per_s"] > 0 and r["epoch_s"] > 0 for r in record["loaders"])
    # What does not depend on the machine: the cache holds 224 x 298 x 3 bytes per 500x375 image, the
    # default nothing; the default's views of 500x375 images are never upsampled 2x, and carry more detail.
    held = {r["cache"]: r["held_bytes"] for r in record["loaders"]}
    assert held == {"none": 0, "crop-size": 16 * 3 * 224 * 298}
    views = record["views"]
    assert views["none"]["upsampled_2x_share"] == 0.0
    assert views["none"]["mean_detail_px"] > views["crop-size"]["mean_detail_px"]
    assert views["none"]["views"] == views["crop-size"]["views"] == 32
