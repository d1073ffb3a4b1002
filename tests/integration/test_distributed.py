"""torchrun with 2 gloo processes on CPU: the same training as 1 process, written by rank 0 alone.

Launched the way users launch it (``torchrun --standalone --nproc_per_node 2 -m clipfit.cli.train``,
a free port chosen by torchrun). Every process records the files it opens for writing, renames,
creates or removes through a Python audit hook installed by a ``sitecustomize`` module on the
subprocesses' path, and reports them at exit (in a file of its own, written after the report is made).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipfit.cli import train
from clipfit.rundir import load_checkpoint

REPO = Path(__file__).resolve().parents[2]

AUDIT = textwrap.dedent(
    """
    import atexit, json, os, sys

    if os.environ.get("RANK") is not None:  # torchrun's workers, not its agent
        _writes = []

        def _hook(event, args):
            if event == "open":
                path, mode, flags = args
                writing = mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
                if writing or (isinstance(mode, str) and any(c in mode for c in "wax+")):
                    _writes.append(os.fsdecode(path) if isinstance(path, (str, bytes)) else f"fd:{path}")
            elif event in ("os.rename", "os.replace", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree"):
                _writes.append(os.fsdecode(args[0]))

        def _report():
            report = json.dumps(_writes)
            with open(os.path.join(os.environ["AUDIT_DIR"], "rank" + os.environ["RANK"] + ".json"), "w") as f:
                f.write(report)

        sys.addaudithook(_hook)
        atexit.register(_report)
    """
)


def _photos(root: Path, classes: int = 6, per_class: int = 10) -> Path:
    """A folder: dataset of 48x36 noisy colour images, one sub-folder per class (larger than clipfit-tiny's 32 px
    crops: every process cuts its views from the original pixels)."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        colour = rng.integers(0, 256, 3)
        for i in range(per_class):
            pixels = np.clip(colour + rng.normal(0, 40, (36, 48, 3)), 0, 255).astype(np.uint8)
            path = root / f"class_{c}" / f"{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
    return root


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _inside(path: str, roots: list[Path]) -> bool:
    resolved = Path(path).resolve()
    return any(resolved == r or r in resolved.parents for r in roots)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
def test_two_gloo_processes_train_what_one_process_trains_and_only_rank_0_writes(tiny_weights, tmp_path, clipfit_cache):
    photos = _photos(tmp_path / "photos")
    common = [
        "--dataset", f"folder:{photos}", "--setting", "fewshot", "--shots", "4", "--model", "clipfit-tiny",
        "--pretrained", tiny_weights, "--epochs", "2", "--warmup-epochs", "0", "--reg-weight", "8",
        "--log-every", "1", "--num-workers", "0", "-q",
    ]  # fmt: skip
    site, audit = tmp_path / "site", tmp_path / "audit"
    site.mkdir()
    audit.mkdir()
    (site / "sitecustomize.py").write_text(AUDIT)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "CLIPFIT_CACHE": str(clipfit_cache),
        "AUDIT_DIR": str(audit),
    }
    # First the two processes (the cache is empty: rank 0 draws and saves the split and the few-shot
    # files, rank 1 must read them), per-process batch 4 ...
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "clipfit.cli.train", *common, "--batch-size", "8", "--run-dir", str(tmp_path / "two")]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    audits = {rank: json.loads((audit / f"rank{rank}.json").read_text()) for rank in (0, 1)}
    watched = [tmp_path.resolve(), Path(clipfit_cache).resolve()]
    assert [w for w in audits[1] if _inside(w, watched)] == [], "rank 1 wrote files of the run, data or cache"
    rank0 = [w for w in audits[0] if _inside(w, watched)]
    assert any("/two/" in w for w in rank0) and any(str(Path(clipfit_cache).resolve()) in w for w in rank0)

    # ... then one process with batch 8, reading the same draw.
    assert train.main([*common, "--batch-size", "8", "--run-dir", str(tmp_path / "one")]) == 0

    one, two = tmp_path / "one", tmp_path / "two"
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    a, b = load_checkpoint(one), load_checkpoint(two)
    assert a.final.keys() == b.final.keys() and len(a.final) == 14
    for name in a.final:
        assert not torch.equal(a.final[name], a.init[name]), f"{name} did not train"
        torch.testing.assert_close(b.final[name], a.final[name], rtol=1e-5, atol=1e-6, msg=name)

    # Logged losses and accuracies are over the global batch, not rank 0's half of it.
    rows1, rows2 = _jsonl(one / "metrics.jsonl"), _jsonl(two / "metrics.jsonl")
    # folder: data validates every epoch: the val_acc rows of both are the same (sharded validation)
    v1, v2 = ([m for m in rows if "val_acc" in m] for rows in (rows1, rows2))
    assert [m["step"] for m in v1] == [m["step"] for m in v2] == [3, 6]
    assert [m["val_acc"] for m in v2] == pytest.approx([m["val_acc"] for m in v1])
    m1, m2 = ([m for m in rows if "loss" in m] for rows in (rows1, rows2))
    assert [m["step"] for m in m1] == [m["step"] for m in m2] == list(range(1, 7))  # 24 images / 8 x 2 epochs
    for x, y in zip(m1, m2, strict=True):
        assert x["acc"] == y["acc"] and x["lr"] == y["lr"]
        for key in ("loss", "ce", "reg"):
            assert y[key] == pytest.approx(x[key], rel=1e-4, abs=1e-6), key
    l1, l2 = _jsonl(one / "layers.jsonl"), _jsonl(two / "layers.jsonl")
    assert [r["grad_sq"] for r in l2] == pytest.approx([r["grad_sq"] for r in l1], rel=1e-4, abs=1e-12)

    r1, r2 = (json.loads((d / "results.json").read_text()) for d in (one, two))
    assert (r1["world_size"], r2["world_size"]) == (1, 2)
    assert r2["metrics"] == pytest.approx(r1["metrics"]) and r2["zero_shot"] == r1["zero_shot"]  # sharded evaluation
    # DDP's own account of what it all-reduces: the 14 trained tensors (448 fp32 values), nothing else.
    log = (two / "log.txt").read_text()
    assert "all-reduces: num_parameter_tensors 14, total_parameter_size_bytes 1792" in log
    assert "epoch 2/2" in log


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
@pytest.mark.parametrize("recipe", ["cocoop", "maple"])
def test_prompt_learners_under_torchrun_train_what_one_process_trains(tiny_weights, tmp_path, clipfit_cache, recipe):
    # CoCoOp's per-image text pass and MaPLe's prompts inside the blocks (hooks) under DDP
    photos = _photos(tmp_path / "photos", classes=4, per_class=8)
    common = [
        "--dataset", f"folder:{photos}", "--setting", "fewshot", "--shots", "4", "--model", "clipfit-tiny",
        "--pretrained", tiny_weights, "--recipe", recipe, "--epochs", "2", "--warmup-epochs", "0",
        "--batch-size", "4", "--num-workers", "0", "-q",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["CLIPFIT_CACHE"] = str(clipfit_cache)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "clipfit.cli.train", *common, "--run-dir", str(tmp_path / "two")]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert train.main([*common, "--run-dir", str(tmp_path / "one")]) == 0
    a, b = load_checkpoint(tmp_path / "one"), load_checkpoint(tmp_path / "two")
    assert a.final.keys() == b.final.keys()
    for name in a.final:
        assert not torch.equal(a.final[name], a.init[name]), f"{name} did not train"
        torch.testing.assert_close(b.final[name], a.final[name], rtol=1e-4, atol=1e-6, msg=name)
