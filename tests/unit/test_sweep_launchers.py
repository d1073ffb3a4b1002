"""How a sweep runs its cells: in order, in a pool of worker processes; failures, skips, progress, the summary.

The runs themselves are stand-ins here (a fake ``train_run`` in process, a fake runner in the pool's workers):
what is tested is the orchestration. tests/integration/test_parallel_sweeps.py trains real shapes-world sweeps.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from clipfit import cluster, sweeps
from clipfit.config import RunConfig
from clipfit.data.base import DataError
from clipfit.errors import ConfigError, RunError
from clipfit.rundir import ERROR_FILE, RunDir
from clipfit.runtime import DistEnv


@pytest.fixture(autouse=True)
def logs_reach_caplog(monkeypatch):
    """clipfit's console setup (by earlier CLI tests) stops its records at the "clipfit" logger."""
    monkeypatch.setattr(logging.getLogger("clipfit"), "propagate", True)


def _cells(tmp_path: Path, plan: list[tuple[str, int]]) -> list[sweeps.Cell]:
    cells = []
    for i, (dataset, seed) in enumerate(plan):
        cfg = RunConfig()
        # as clipfit-train's run_configs gives them: the setting resolved per dataset
        cfg.data.dataset, cfg.data.setting, cfg.seed = dataset, "base2new", seed
        cells.append(sweeps.Cell(i, cfg.to_dict(), str(tmp_path / dataset / f"seed{seed}")))
    return cells


def _results(seed: int) -> dict:
    metrics = {"base_acc": 50.0 + seed, "new_acc": 40.0, "hm": 44.0}
    return {"metrics": metrics, "zero_shot": {"base_acc": 30.0, "new_acc": 30.0, "hm": 30.0}}


def fake_train_run(cfg, run_dir, **_):
    if cfg.data.dataset == "bad":
        raise DataError("dataset folder bad/ not found")
    if cfg.seed == 3:
        raise RunError(f"{run_dir} already holds a finished run with other settings")
    if cfg.seed == 4:
        raise ZeroDivisionError("a bug")
    return _results(cfg.seed)


def test_a_sequential_sweep_goes_on_past_failures_and_writes_each_error_into_its_run(tmp_path, monkeypatch, caplog):
    import clipfit.run

    monkeypatch.setattr(clipfit.run, "train_run", fake_train_run)
    cells = _cells(tmp_path, [("bad", 1), ("bad", 2), ("shapes", 1), ("shapes", 3), ("shapes", 4), ("shapes", 2)])
    with caplog.at_level(logging.INFO, logger="clipfit"):
        outcomes = sweeps.Sequential().run(cells, sweeps.CellOptions())
    assert [o.status for o in outcomes] == ["failed", "skipped", "done", "failed", "failed", "done"]
    assert [o.note for o in outcomes[:2]] == ["failed: data error", "skipped: data error above"]
    assert sweeps.failures(outcomes) == 4
    # the failed runs' folders say why; the data error's does not exist (nothing was created for it)
    assert (tmp_path / "shapes" / "seed3" / ERROR_FILE).read_text().startswith("RunError: ")
    bug = (tmp_path / "shapes" / "seed4" / ERROR_FILE).read_text()
    assert "Traceback" in bug and "ZeroDivisionError: a bug" in bug
    assert not (tmp_path / "bad").exists()
    line = "[2/6 done, 0 running, 3 failed, 1 skipped, 0 waiting] end shapes base2new clipfit shots 16 seed 2"
    assert line in caplog.text

    summary = sweeps.summary(cells, outcomes).splitlines()
    assert summary[0] == "sweep of 6 runs (zero-shot in brackets):"
    assert "skipped: data error above" in summary[2] and "failed: ZeroDivisionError" in summary[5]
    assert summary[-1].split()[-6:] == ["base", "51.50", "new", "40.00", "HM", "45.03"]  # seeds 1 and 2

    # the same sweep once the problems are gone: the error files go with them
    monkeypatch.setattr(clipfit.run, "train_run", lambda cfg, run_dir, **_: _results(cfg.seed))
    assert sweeps.failures(sweeps.Sequential().run(cells, sweeps.CellOptions())) == 0
    assert not list(tmp_path.rglob(ERROR_FILE))


def fake_runner(cell: sweeps.Cell, options: sweeps.CellOptions) -> sweeps.CellOutcome:
    """A worker's stand-in for run_cell: seed 3 kills its worker, dataset "bad" is a data error, others wait a bit."""
    if cell.config["seed"] == 3:
        os._exit(7)
    if cell.dataset == "bad":
        time.sleep(0.5)  # the other worker goes on meanwhile
        return sweeps.CellOutcome(cell.index, "failed", note="failed: data error", data_error=True)
    time.sleep(0.2)
    return sweeps.CellOutcome(cell.index, "done", results={**_results(cell.config["seed"]), "pid": os.getpid()})


def test_a_pool_replaces_a_dead_worker_skips_a_broken_dataset_and_reports_in_sweep_order(tmp_path, caplog):
    plan = [("bad", 1), ("shapes", 1), ("shapes", 3), ("shapes", 2), ("bad", 2), ("bad", 3), ("shapes", 4)]
    cells = _cells(tmp_path, plan)
    pool = sweeps.LocalPool(2, threads=1, poll_s=0.2, runner=fake_runner)
    with caplog.at_level(logging.INFO, logger="clipfit"):
        outcomes = pool.run(cells, sweeps.CellOptions())
    assert [o.index for o in outcomes] == list(range(len(cells)))
    by_label = {(c.dataset, c.config["seed"]): o for c, o in zip(cells, outcomes, strict=True)}
    assert by_label[("shapes", 3)].note == "failed: worker died"
    assert "exit code 7" in (tmp_path / "shapes" / "seed3" / ERROR_FILE).read_text()
    assert all(by_label[("shapes", s)].status == "done" for s in (1, 2, 4))
    assert by_label[("bad", 1)].data_error
    # the broken dataset's cells that had not started when its error came back were skipped, not run
    skipped = [o for (d, _), o in by_label.items() if d == "bad" and o.status == "skipped"]
    assert skipped and all(o.note == "skipped: data error above" for o in skipped)
    assert len({o.results["pid"] for o in outcomes if o.results}) >= 2  # two processes (one replaced)
    assert "sweep of 7 runs on 2 worker processes (cpu, 1 torch threads each)" in caplog.text
    assert "waiting]" in caplog.text


def test_sweep_options_are_refused_with_one_line(tmp_path):
    from clipfit.cli import train

    argv = ["--seeds", "1", "2", "--out", str(tmp_path), "--dry-run", "--model", "clipfit-tiny", "--pretrained", "none"]
    for extra in (["--workers", "two"], ["--workers", "0"], ["--cluster", "local", "--workers", "2"]):
        args = train.build_parser().parse_args([*argv, *extra])
        with pytest.raises(ConfigError) as error:
            train._launcher(args, DistEnv()).run([], sweeps.CellOptions())
        assert "\n" not in str(error.value)
    for bad in (["timeout_min"], ["=3"]):
        with pytest.raises(ConfigError):
            cluster.parse_cluster_options(bad)
    assert cluster.parse_cluster_options(["timeout_min=240", "slurm_partition=gpu", "mem_gb=7.5"]) == {
        "timeout_min": 240,
        "slurm_partition": "gpu",
        "mem_gb": 7.5,
    }


def test_launch_flags_that_would_be_ignored_are_refused_and_one_run_goes_through_the_launcher(tmp_path, monkeypatch):
    from clipfit.cli import train

    one = ["--seeds", "1", "--out", str(tmp_path), "--model", "clipfit-tiny", "--pretrained", "none"]
    for extra, says in (
        (["--cluster-option", "timeout_min=5"], "configure --cluster"),
        (["--cluster-folder", str(tmp_path / "jobs")], "configure --cluster"),
        (["--workers", "2", "--resume", str(tmp_path)], "--resume continues one run"),
        (["--cluster", "debug", "--run-dir", str(tmp_path / "one")], "--run-dir names one run"),
    ):
        with pytest.raises(ConfigError, match=says):
            train._check_launch_flags(train.build_parser().parse_args([*one, *extra]))
    assert not train._check_launch_flags(train.build_parser().parse_args(one))
    # a single run with --workers is a sweep of one: it reaches the launcher instead of running here
    seen = []
    monkeypatch.setattr(train, "sweep", lambda configs, args, env: seen.append(len(configs)) or 0)
    assert train.main([*one, "--workers", "2", "-q"]) == 0
    assert seen == [1]


def test_a_machine_without_gpus_runs_cpu_workers(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sweeps.LocalPool.for_machine("auto").workers == 1
    pool = sweeps.LocalPool.for_machine("3")
    assert pool.workers == 3 and pool.devices is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert sweeps.LocalPool.for_machine("auto").devices == ["cuda:0", "cuda:1"]
    assert sweeps.LocalPool.for_machine("3").devices == ["cuda:0", "cuda:1", "cuda:0"]
    assert sweeps.LocalPool.for_machine("2", device="cpu").devices is None


def test_submitit_reads_a_finished_run_only_when_it_has_the_cells_settings(tmp_path):
    """A finished run of other settings (another --lr) is not the cell's result: it is submitted, so its task
    refuses the folder as a sequential sweep does, instead of reporting the old numbers."""
    from clipfit import cluster
    from clipfit.config import resolve

    cells = _cells(tmp_path, [("shapes", 1), ("shapes", 2)])
    for cell in cells:
        run = RunDir(Path(cell.run_dir))
        run.path.mkdir(parents=True)
        stored = resolve(cell.cfg)
        if cell.config["seed"] == 2:
            stored.optim.lr = 0.5  # trained with another learning rate
        run.write_config({"config": stored.to_dict()})
        run.write_results({"recipe": "clipfit", **_results(cell.config["seed"])})

    class Job:
        job_id, state = "7_0", "COMPLETED"

        def __init__(self, cell):
            self.cell = cell

        def done(self):
            return True

        def result(self):
            return sweeps.CellOutcome(self.cell.index, "failed", note="failed: SettingsMismatchError")

    class Executor:
        def __init__(self):
            self.submitted = []

        def map_array(self, fn, todo):
            self.submitted.extend(c.config["seed"] for c in todo)
            return [Job(c) for c in todo]

    executor = Executor()
    outcomes = cluster.SubmititLauncher(executor, poll_s=0.01).run(cells, sweeps.CellOptions())
    assert executor.submitted == [2]
    assert [o.status for o in outcomes] == ["done", "failed"]
    assert outcomes[0].results["metrics"]["base_acc"] == 51.0


def test_a_pool_worker_bounds_its_dataloader_workers_by_the_environment(monkeypatch):
    from clipfit.data import loaders

    monkeypatch.setenv(loaders.LOADER_WORKERS_ENV, "1")  # what a worker with 2 or 3 threads sets
    assert loaders.default_workers() == 1
    monkeypatch.delenv(loaders.LOADER_WORKERS_ENV)
    assert loaders.default_workers() == max(0, min(8, (os.cpu_count() or 2) // 2))


def test_a_run_of_the_old_crop_size_pipeline_names_the_flag_that_continues_it(tmp_path):
    from clipfit.config import resolve
    from clipfit.rundir import SettingsMismatchError

    cfg = resolve(_cells(tmp_path, [("shapes", 1)])[0].cfg)
    run = RunDir(tmp_path / "old")
    run.path.mkdir()
    old = cfg.to_dict()
    del old["data"]["train_cache"]  # written before --train-cache existed: it read as crop-size
    run.write_config({"config": old})
    run.write_results({"recipe": "clipfit", **_results(1)})
    with pytest.raises(SettingsMismatchError, match="add --train-cache crop-size to continue or reuse them"):
        run.prepare(cfg, overwrite=False)
