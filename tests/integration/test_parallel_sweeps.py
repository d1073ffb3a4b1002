"""Sweeps of real shapes-world runs in parallel: a local pool of CPU worker processes and submitit's local executor
give exactly what a sequential sweep gives (results, summary, every checkpoint tensor bit for bit).

Every process computes with one torch thread (the pool divides 2 CPUs between 2 workers; the submitit task reads
OMP_NUM_THREADS; the sequential reference sets it): on the CPU, sums split over another number of threads differ
in their last bits (clipfit.sweeps says how much).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clipfit import sweeps
from clipfit.cli import train
from clipfit.engine import Trainer
from clipfit.rundir import CHECKPOINT_FILE, RESULTS_FILE

REPO = Path(__file__).resolve().parents[2]
FLAGS = {"batch_size": 16, "epochs": 2}


def _argv(tiny_argv, out: Path, seeds: list[int], *extra: str) -> list[str]:
    argv = tiny_argv(out / "unused", **FLAGS)
    argv = [a for a in argv if a not in ("--run-dir", str(out / "unused"))]
    return [*argv, "--out", str(out), "--seeds", *map(str, seeds), *extra]


def _run(out: Path, seed: int) -> Path:
    return out / "shapes" / "base2new" / "clipfit" / "shots2" / f"seed{seed}"


def _sequential(tiny_argv, out: Path, seeds: list[int], capsys) -> str:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train.main(_argv(tiny_argv, out, seeds)) == 0
    finally:
        torch.set_num_threads(threads)
    return capsys.readouterr().out


def _assert_same_runs(a: Path, b: Path, seeds: list[int]) -> None:
    for seed in seeds:
        ra, rb = (json.loads((_run(x, seed) / RESULTS_FILE).read_text()) for x in (a, b))
        assert (ra["metrics"], ra["zero_shot"]) == (rb["metrics"], rb["zero_shot"])
        ta, tb = (load_file(_run(x, seed) / CHECKPOINT_FILE) for x in (a, b))
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def _table(printed: str, out: Path) -> list[str]:
    lines = printed.replace(str(out), "OUT").splitlines()
    start = [i for i, line in enumerate(lines) if line.endswith("(zero-shot in brackets):")][-1]
    end = next((i for i in range(start, len(lines)) if lines[i] == "next:"), len(lines))  # the next commands
    return lines[start:end]


@pytest.mark.slow
def test_a_pool_of_cpu_workers_gives_the_sequential_sweep_bit_for_bit(tiny_argv, tmp_path, monkeypatch, capsys):
    seeds = [1, 2, 3]
    printed = _sequential(tiny_argv, tmp_path / "sequential", seeds, capsys)

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(sweeps, "available_cpus", lambda: 2)  # 2 workers x 1 thread, whatever the machine
    assert train.main([*_argv(tiny_argv, tmp_path / "pool", seeds, "--workers", "2")]) == 0
    pooled = capsys.readouterr().out
    assert _table(pooled, tmp_path / "pool") == _table(printed, tmp_path / "sequential")
    _assert_same_runs(tmp_path / "sequential", tmp_path / "pool", seeds)
    logs = {(_run(tmp_path / "pool", s) / "log.txt").read_text().count("epoch 2/2") for s in seeds}
    assert logs == {1}  # every worker's run logged into its own folder


@pytest.mark.slow
def test_submitit_runs_unfinished_cells_as_array_tasks_and_resumes_an_interrupted_one(
    tiny_argv, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    seeds = [1, 2, 3]
    printed = _sequential(tiny_argv, tmp_path / "sequential", seeds, capsys)

    out = tmp_path / "cluster"
    # seed 1 finished before (copied: not submitted); seed 2 interrupted after its first epoch; seed 3 new
    shutil.copytree(_run(tmp_path / "sequential", 1), _run(out, 1))
    original = Trainer._checkpoint

    def stop_after_one(self, epoch, *args, **kwargs):
        original(self, epoch, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_checkpoint", stop_after_one)
    torch.set_num_threads(1)
    try:
        assert train.main(_argv(tiny_argv, out, [2])) == 130
    finally:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    monkeypatch.setattr(Trainer, "_checkpoint", original)
    assert (_run(out, 2) / CHECKPOINT_FILE).exists() and not (_run(out, 2) / RESULTS_FILE).exists()
    capsys.readouterr()

    argv = [a for a in _argv(tiny_argv, out, seeds, "--cluster", "local") if a != "-q"]  # the progress lines too
    assert train.main(argv) == 0
    captured = capsys.readouterr()
    assert "submitted 2 array tasks" in captured.out and "1 runs had finished before" in captured.out
    assert "[3/3 done, 0 running, 0 failed, 0 waiting]" in captured.out
    assert _table(captured.out, out) == _table(printed, tmp_path / "sequential")
    _assert_same_runs(tmp_path / "sequential", out, seeds)
    assert "resum" in (_run(out, 2) / "log.txt").read_text().lower()
    assert list((out / ".submitit").glob("*_log.out"))  # submitit's own logs, beside the runs
