"""Nothing is lost: a run stopped anywhere finishes bit-identical when the same command runs again.

Every run is the suite's tiny run (see ``tiny_argv``) in batches of 16, logged every 2 steps: 3 epochs of 4 steps.
After the run finishes, its tensors, logs and results must equal those of a run that went through.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clipfit.cli import train
from clipfit.engine import Trainer
from clipfit.rundir import LAYERS_FILE, METRICS_FILE, RESULTS_FILE, load_checkpoint, read_jsonl

FLAGS = {"batch_size": 16, "log_every": 2}


@pytest.fixture(scope="module")
def through(tmp_path_factory, train_tiny) -> Path:
    """The run uninterrupted: what every killed run must end equal to."""
    return train_tiny(tmp_path_factory.mktemp("through") / "run", **FLAGS)[0]


def assert_same_run(run_dir: Path, through: Path) -> None:
    """Finished with the tensors, logs and results of the run that went through, nothing left over."""
    a, b = load_checkpoint(through), load_checkpoint(run_dir)
    assert b.meta["complete"] and a.final.keys() == b.final.keys() and a.init.keys() == b.init.keys()
    assert all(torch.equal(a.final[n], b.final[n]) and torch.equal(a.init[n], b.init[n]) for n in a.final)
    for name in (METRICS_FILE, LAYERS_FILE):
        assert (run_dir / name).read_text() == (through / name).read_text(), name
    ra, rb = (json.loads((d / RESULTS_FILE).read_text()) for d in (through, run_dir))
    assert ra["metrics"] == rb["metrics"] and ra["zero_shot"] == rb["zero_shot"] and ra["epochs"] == rb["epochs"]
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(p.name for p in through.iterdir())  # no temp, no lock


# ----------------------------------------------------------------------------- logged, not yet checkpointed


@pytest.mark.slow
@pytest.mark.parametrize("epoch", [1, 2])
def test_a_kill_after_an_epoch_is_logged_but_before_its_checkpoint_logs_nothing_twice(
    through, tiny_argv, tmp_path, monkeypatch, epoch
):
    # epoch 1: no checkpoint yet, so the re-run starts from scratch (it appended to the old logs: 16 metrics
    # records instead of 14 in the run); epoch 2: it resumes after epoch 1
    original = Trainer._checkpoint

    def die_before(self, at, *args, **kwargs):
        if at == epoch:
            raise KeyboardInterrupt
        original(self, at, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_checkpoint", die_before)
    argv = tiny_argv(tmp_path / "run", **FLAGS)
    assert train.main(argv) == 130
    assert len(read_jsonl(tmp_path / "run" / METRICS_FILE)) == 2 * epoch  # the epoch's records are there
    monkeypatch.setattr(Trainer, "_checkpoint", original)
    assert train.main(argv) == 0
    assert_same_run(tmp_path / "run", through)
