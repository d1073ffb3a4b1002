"""``make paper`` refuses to start when datasets or weights are missing, listing all of them, before any training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fixture_trees import build

from clipfit.cli import data

REPO = Path(__file__).resolve().parents[2]


def test_check_lists_every_missing_dataset_and_the_weights(tmp_path, capsys):
    build(tmp_path, "dtd")  # one dataset ready, ten missing; the ViT-B-16 / openai weights are not cached here
    assert data.main(["check", "--data-root", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert "dtd" in out and "ready" in out.split("dtd", 1)[1].splitlines()[0]
    assert sum("MISSING" in line for line in out.splitlines()) == 11  # 10 datasets + the weights
    assert "weights ViT-B-16 / openai: MISSING" in out and "not ready: 11 problem(s); nothing was trained" in err
    # what is there and what is asked for agree: ready, exit 0
    assert data.main(["check", "--data-root", str(tmp_path), "--datasets", "dtd", "--pretrained", "none"]) == 0


def test_make_paper_stops_before_training(tmp_path):
    out = tmp_path / "runs"
    make = subprocess.run(
        # -o: never (re)install the venv from a test; the suite runs inside it
        ["make", "-s", "-o", ".venv/.installed-stamp", "paper", f"DATA_ROOT={tmp_path}", f"OUT={out}"],
        cwd=REPO, capture_output=True, text=True, env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
                                                         "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert make.returncode != 0
    assert "not ready: 12 problem(s); nothing was trained" in make.stderr
    assert not out.exists()
    usage = subprocess.run(
        ["make", "-s", "-o", ".venv/.installed-stamp", "paper"], cwd=REPO, capture_output=True, text=True
    )
    assert usage.returncode != 0 and "usage: make paper DATA_ROOT=" in usage.stderr
