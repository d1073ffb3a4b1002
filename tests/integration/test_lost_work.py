"""Nothing is lost: a run killed anywhere, or stopped by a full disk, finishes bit-identical when the same command
runs again; two runs never share a folder.

Every run is the suite's tiny run (see ``tiny_argv``) in batches of 16, logged every 2 steps: 3 epochs of 4 steps,
22 writes into its folder (config.json; per epoch 2 records in each log and the checkpoint with its JSON mirror; the
finished checkpoint; results.json). After every kill or failure the folder must be readable throughout (JSON files,
checkpoint, logs up to their last whole record, no step logged twice); after the run finishes, its tensors, logs
and results must equal those of a run that went through, with no temporary file or lock left.

The kills: in process (``tests/faults.py``: a write that stops half-way with KeyboardInterrupt, SystemExit without
clipfit's cleanup, or ENOSPC), and real SIGKILLs of forked child processes, in the middle of chosen writes and at
seeded random moments.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from faults import Faults, Zygote

from clipfit.cli import eval as eval_cli
from clipfit.cli import train
from clipfit.engine import Trainer
from clipfit.files import temp_files
from clipfit.rundir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    LAYERS_FILE,
    LOCK_FILE,
    LOG_FILE,
    METRICS_FILE,
    RESULTS_FILE,
    RUN_FILES,
    load_checkpoint,
    read_jsonl,
)
from clipfit.runlock import RunLock

REPO = Path(__file__).resolve().parents[2]
FLAGS = {"batch_size": 16, "log_every": 2}
WRITES = 22  # the writes of one run into its folder (counted by test_the_writes_of_a_run)


@pytest.fixture(scope="module")
def through(tmp_path_factory, train_tiny) -> Path:
    """The run uninterrupted: what every killed run must end equal to."""
    return train_tiny(tmp_path_factory.mktemp("through") / "run", **FLAGS)[0]


def readable(run_dir: Path) -> dict:
    """Assert that every file of the folder can be read and no step is logged twice; return what is there."""
    for name in (CONFIG_FILE, RESULTS_FILE, "checkpoint.json"):
        if (run_dir / name).exists():
            json.loads((run_dir / name).read_text())
    epoch = load_checkpoint(run_dir).meta["epoch"] if (run_dir / CHECKPOINT_FILE).exists() else 0
    torn = 0
    for name in (METRICS_FILE, LAYERS_FILE):
        if (run_dir / name).exists():
            records = read_jsonl(run_dir / name)
            keys = [(r["step"], r.get("name")) for r in records]
            assert len(set(keys)) == len(keys), f"{name}: a step logged twice"
            assert [k[0] for k in keys] == sorted(k[0] for k in keys), f"{name}: steps out of order"
            torn += len([line for line in (run_dir / name).read_text().splitlines() if line]) - len(records)
    if (run_dir / LOG_FILE).exists():
        (run_dir / LOG_FILE).read_text(encoding="utf-8")
    return {
        "epoch": epoch,
        "finished": (run_dir / RESULTS_FILE).exists(),
        "torn": torn,
        "temp": [p.name for p in temp_files(run_dir, RUN_FILES)],
        "lock": (run_dir / LOCK_FILE).exists(),
    }


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


def test_the_writes_of_a_run(tiny_argv, tmp_path, monkeypatch):
    faults = Faults(tmp_path / "run").install(monkeypatch.setattr)
    assert train.main(tiny_argv(tmp_path / "run", **FLAGS)) == 0
    names = [(w.kind, w.name) for w in faults.writes]
    epoch = [("append", METRICS_FILE), ("append", LAYERS_FILE)] * 2
    epoch += [("replace", CHECKPOINT_FILE), ("replace", "checkpoint.json")]
    finish = [("replace", CHECKPOINT_FILE), ("replace", "checkpoint.json"), ("replace", RESULTS_FILE)]
    assert names == [("replace", CONFIG_FILE), *epoch * 3, *finish] and len(names) == WRITES


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


# ----------------------------------------------------------------------------- a full disk


@pytest.mark.slow
@pytest.mark.parametrize("write", [1, 11, 12, WRITES], ids=["first", "a-log", "a-checkpoint", "last"])
def test_a_full_disk_stops_the_run_with_one_line_and_the_same_command_finishes_it(
    through, tiny_argv, tmp_path, monkeypatch, capsys, write
):
    # writes 1 (config.json), 11 (layers.jsonl, epoch 2), 12 (epoch 2's checkpoint), 22 (results.json)
    run_dir = tmp_path / "run"
    argv = tiny_argv(run_dir, **FLAGS)
    with monkeypatch.context() as patch:
        faults = Faults(run_dir, write, "enospc").install(patch.setattr)
        assert train.main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines  # no traceback, nothing else
    assert lines[0].startswith(
        f"ERROR: no space left on the device (or quota exceeded) writing {run_dir / faults.failed.name} ("
    )
    assert lines[0].endswith(
        " free there); free some space and run the same command again: a run continues from its last checkpoint"
    )
    state = readable(run_dir)
    assert not state["finished"] and not state["lock"] and state["temp"] == []  # never results of an unfinished run
    assert state["torn"] == (1 if faults.failed.kind == "append" else 0)
    assert train.main(argv) == 0  # space freed
    assert_same_run(run_dir, through)


# ----------------------------------------------------------------------------- kills in process


@pytest.mark.slow
def test_runs_stopped_in_the_middle_of_writes_resume_to_the_same_run(through, tiny_argv, tmp_path, monkeypatch):
    # One attempt per file, each stopped in the middle of a seeded random one of the attempt's first writes of it
    # (KeyboardInterrupt and SystemExit without clipfit's cleanup in turn), then one more attempt.
    rng = random.Random(15)
    run_dir, argv = tmp_path / "run", tiny_argv(tmp_path / "run", **FLAGS)
    files = [METRICS_FILE, CHECKPOINT_FILE, LAYERS_FILE, "checkpoint.json", CONFIG_FILE, CHECKPOINT_FILE, RESULTS_FILE]
    stops = []
    for attempt, name in enumerate(files):
        point = f"{name}#{1 if name == RESULTS_FILE else rng.randint(1, 2)}"
        with monkeypatch.context() as patch:
            faults = Faults(run_dir, point, ("interrupt", "die")[attempt % 2]).install(patch.setattr)
            try:
                code = train.main(argv)
            except SystemExit as exc:
                code = exc.code
        assert faults.failed is not None, f"attempt {attempt} finished before {point}"
        assert code == (130 if faults.how == "interrupt" else 137)
        state = readable(run_dir)
        if faults.how == "die" and faults.failed.kind == "replace":  # the half-written temporary file stays
            assert len(state["temp"]) == 1 and state["temp"][0].startswith(f".{name}.")
        else:
            assert state["temp"] == []
        stops.append((point, faults.how, state["epoch"]))
    epochs = [epoch for _, _, epoch in stops]
    assert epochs == sorted(epochs) and epochs[-1] == 3, stops  # never back, and on to the results
    assert train.main(argv) == 0
    assert_same_run(run_dir, through)


# ----------------------------------------------------------------------------- real kills (SIGKILL)


@pytest.fixture(scope="module")
def zygote(tmp_path_factory, session_cache):
    """Forks the runs that get killed (see tests/faults.py): one interpreter start for all of them."""
    workdir = tmp_path_factory.mktemp("zygote")
    tests = str(REPO / "tests")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([tests, str(REPO), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "CLIPFIT_CACHE": str(session_cache),
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
    }
    process = Zygote(workdir, env, torch.get_num_threads(), datasets=("shapes",))
    yield process
    process.close()


@pytest.fixture(scope="module")
def through_forked(zygote, tiny_argv, tmp_path_factory):
    """The uninterrupted run, in a child of the zygote like the killed ones; and how long it took."""
    run_dir = tmp_path_factory.mktemp("through-forked") / "run"
    attempt = zygote.run(tiny_argv(run_dir, **FLAGS), run_dir)
    assert attempt.code == 0, attempt.log
    return run_dir, attempt.seconds


@pytest.mark.slow
def test_sigkill_in_the_middle_of_writes_then_the_same_command_finishes_the_run(zygote, through_forked, tiny_argv):
    through, _ = through_forked
    run_dir = through.parent.parent / "killed-in-writes" / "run"
    argv = tiny_argv(run_dir, **FLAGS)
    # Each point counts from its attempt's start: epoch 1's second metrics record (no checkpoint yet: the next
    # attempt starts afresh); the mirror of epoch 1's checkpoint; epoch 2's second layers record (resumed after
    # epoch 1); epoch 3's checkpoint (resumed after epoch 1 again: epoch 2's records are in the logs twice unless
    # they are cut back); results.json (after the finished checkpoint).
    points = [f"{METRICS_FILE}#2", "checkpoint.json#1", f"{LAYERS_FILE}#2", f"{CHECKPOINT_FILE}#2", f"{RESULTS_FILE}#1"]
    states = []
    for point in points:
        attempt = zygote.run(argv, run_dir, fail_at=point)
        assert attempt.code == -signal.SIGKILL, attempt.log
        states.append(readable(run_dir))
    assert [s["epoch"] for s in states] == [0, 1, 1, 2, 3]
    assert [s["torn"] for s in states] == [1, 0, 1, 0, 0]
    assert [len(s["temp"]) for s in states] == [0, 1, 0, 1, 1]  # half a file each (the previous one is gone)
    assert all(s["lock"] and not s["finished"] for s in states)
    final = zygote.run(argv, run_dir)
    assert final.code == 0, final.log
    assert "taking over" in final.log
    assert_same_run(run_dir, through)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_the_same_command_finishes_the_run(zygote, tiny_argv, tmp_path_factory):
    # Longer runs for this one (6 epochs of 8 steps, every step logged), so that most of a run is training and
    # writing. Each round kills a run at seeded random moments of the run's length until an attempt finishes
    # (checked against the uninterrupted run); rounds go on until 8 kills have landed. The length is the shortest
    # uninterrupted run seen so far: a reference measured while the machine was busy must not push the kills past
    # the end of the runs that follow. Every resumed attempt pays the start-up again (model, zero-shot), so kills
    # drawn over the whole run's length can keep a round from finishing on a slow machine: after 12 killed
    # attempts the round's last attempt runs to the end (the resumed run must still equal the uninterrupted one).
    flags = {"batch_size": 8, "log_every": 1, "epochs": 6}
    base = tmp_path_factory.mktemp("killed-at-random")
    through = base / "through"
    reference = zygote.run(tiny_argv(through, **flags), through)
    assert reference.code == 0, reference.log
    length = reference.seconds
    rng = random.Random(1515)
    kills: list[dict] = []
    for round_ in range(1, 41):
        run_dir = base / f"round{round_}"
        argv = tiny_argv(run_dir, **flags)
        for attempt_no in range(13):
            delay = rng.uniform(0.0, 1.0) * length if attempt_no < 12 else None
            attempt = zygote.run(argv, run_dir, kill_after=delay)
            if attempt.code == 0:
                if attempt_no == 0:  # a whole run, start to end
                    length = min(length, attempt.seconds)
                break
            assert attempt.code == -signal.SIGKILL, attempt.log
            kills.append({"round": round_, "after": round(delay, 3), **readable(run_dir)})
        assert_same_run(run_dir, through)  # (the last attempt is not killed: a round always ends finished)
        if len(kills) >= 8:
            break
    assert len(kills) >= 8, kills
    print(f"{len(kills)} kills in {round_} rounds, run length {length:.2f} s:", *kills, sep="\n  ")


# ----------------------------------------------------------------------------- two runs into one folder


@pytest.fixture
def lock_holder(tmp_path):
    """``lock_holder(folder)``: another process that takes the folder's lock and lives until killed."""
    started = []

    def hold(folder: Path) -> subprocess.Popen:
        code = (
            "import sys, time; from clipfit.runlock import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(300)"
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        process = subprocess.Popen(
            [sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True, env=env
        )
        started.append(process)
        assert process.stdout.readline().strip() == "locked"
        return process

    yield hold
    for process in started:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_a_second_run_into_a_folder_in_use_stops_and_a_stale_lock_is_taken_over(
    through, tiny_argv, tmp_path, lock_holder, capsys
):
    run_dir = tmp_path / "run"
    holder = lock_holder(run_dir)
    # the case: another run (4 epochs) trains into the folder while this one (6 epochs) starts
    assert train.main(tiny_argv(run_dir, epochs=6, **FLAGS)) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"is in use by another run (pid {holder.pid} on" in err
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]  # nothing of this run was written
    holder.kill()  # the holder dies without releasing its lock
    holder.wait()
    assert train.main(tiny_argv(run_dir, **FLAGS)) == 0
    assert f"taking over {run_dir / LOCK_FILE}: the run that held it is gone (process {holder.pid} no longer runs" in (
        capsys.readouterr().err
    )
    assert_same_run(run_dir, through)


@pytest.mark.slow
def test_a_sweep_skips_the_runs_another_process_trains(tiny_argv, tmp_path, lock_holder, capsys):
    out = tmp_path / "runs"
    argv = [a for a in tiny_argv(tmp_path / "unused", **FLAGS) if a not in ("--run-dir", str(tmp_path / "unused"))]
    busy = out / "shapes" / "base2new" / "clipfit" / "shots2" / "seed1"
    lock_holder(busy)
    assert train.main([*argv, "--out", str(out), "--seeds", "1", "2", "--epochs", "2"]) == 2
    printed = capsys.readouterr().out
    assert "seed 1   skipped: another process trains it" in printed
    assert (out / "shapes" / "base2new" / "clipfit" / "shots2" / "seed2" / RESULTS_FILE).exists()


# ----------------------------------------------------------------------------- clipfit-eval


@pytest.mark.slow
def test_clipfit_eval_writes_no_results_for_an_unfinished_run(tiny_argv, tmp_path, monkeypatch, capsys):
    original = Trainer._checkpoint

    def stop_after_one(self, epoch, *args, **kwargs):
        original(self, epoch, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_checkpoint", stop_after_one)
    assert train.main(tiny_argv(tmp_path / "run", **FLAGS)) == 130
    capsys.readouterr()
    assert eval_cli.main(["--checkpoint", str(tmp_path / "run"), "--datasets", "shapes", "-q"]) == 2
    assert "is an unfinished run (epoch 1 of 3): finish it first" in capsys.readouterr().err
    assert not (tmp_path / "run" / "eval").exists()
    assert not RunLock(tmp_path / "run").holder()
