"""The run directory's files survive kills and full disks: torn logs, temporary files, the lock, disk-full errors."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from clipfit import files
from clipfit.console import run_command, setup_logging
from clipfit.errors import RunError
from clipfit.files import DiskFullError, append_text, atomic_write_bytes, remove_temp_files
from clipfit.rundir import RUN_FILES, JsonlLog, RunDir, read_jsonl
from clipfit.runlock import LOCK_FILE, LOCK_STALE_S, LockHolder, RunLock, RunLockedError


def _records(steps: list[int]) -> str:
    return "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in steps)


# ----------------------------------------------------------------------------- logs


def test_a_torn_last_line_is_dropped_with_a_warning(tmp_path, caplog):
    log = tmp_path / "layers.jsonl"
    log.write_text(_records([2, 4]) + '{"step": 6, "lo')  # a kill or a full disk in the middle of a record
    with caplog.at_level(logging.WARNING, logger="clipfit"):
        assert [r["step"] for r in read_jsonl(log)] == [2, 4]
    assert "layers.jsonl: dropped 1 line(s) that are not whole JSON records (line 3)" in caplog.text


def test_a_torn_line_inside_a_log_of_an_older_version_is_dropped_too(tmp_path, caplog):
    # older versions appended a re-run's records after a torn line: it sits in the middle
    log = tmp_path / "metrics.jsonl"
    log.write_text(_records([2]) + '{"step": 4, "lo' + _records([2, 4]))
    with caplog.at_level(logging.WARNING, logger="clipfit"):
        assert [r["step"] for r in read_jsonl(log)] == [2, 4]  # the torn line swallowed the next record's start
    assert "(line 2)" in caplog.text


def test_resuming_cuts_a_log_back_to_the_checkpoint_step_atomically(tmp_path):
    log = tmp_path / "metrics.jsonl"
    whole = _records([2, 4, 6, 8])
    log.write_text(whole + '{"step": 10, "l')
    JsonlLog(log).truncate_after(4)
    assert log.read_text() == _records([2, 4])  # the lines as written, not re-serialised
    assert not list(tmp_path.glob(".*.tmp"))
    stamp = log.stat().st_mtime_ns
    JsonlLog(log).truncate_after(4)  # nothing to remove: the file is not rewritten
    assert log.stat().st_mtime_ns == stamp


def test_a_fresh_start_removes_the_logs_of_an_attempt_without_checkpoint(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text(_records([2, 4]) + '{"st')
    JsonlLog(log).truncate_after(0)
    assert not log.exists()
    JsonlLog(log).write([{"step": 2}])
    assert read_jsonl(log) == [{"step": 2}]


# ----------------------------------------------------------------------------- temporary files


def test_only_the_temporary_files_of_the_run_files_are_removed(tmp_path):
    leftovers = [".checkpoint.safetensors.k2_x9abc.tmp", ".metrics.jsonl.a1b2c3d4.tmp", ".results.json.zz.tmp"]
    others = [".notes.txt.a1b2c3d4.tmp", "results.json.tmp", ".results.json.tmp", "mine.tmp", ".results.json.x.bak"]
    for name in leftovers + others:
        (tmp_path / name).write_text("x")
    (tmp_path / "eval" / "shapes").mkdir(parents=True)
    (tmp_path / "eval" / "shapes" / ".results.json.a1b2c3d4.tmp").write_text("x")
    assert sorted(p.name for p in remove_temp_files(tmp_path, RUN_FILES)) == sorted(leftovers)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*others, "eval"])
    assert (tmp_path / "eval" / "shapes" / ".results.json.a1b2c3d4.tmp").exists()


def test_a_run_start_removes_the_leftovers_of_interrupted_writes(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    (run.path / ".checkpoint.safetensors.abcd1234.tmp").write_bytes(b"half a checkpoint")
    (run.path / ".my-notes.md.abcd1234.tmp").write_text("not clipfit's")
    with run.locked():
        assert sorted(p.name for p in run.path.iterdir()) == [".my-notes.md.abcd1234.tmp", LOCK_FILE]
    assert [p.name for p in run.path.iterdir()] == [".my-notes.md.abcd1234.tmp"]


# ----------------------------------------------------------------------------- a full disk


def test_a_full_disk_names_the_file_and_the_free_space(tmp_path):
    def half_then_full(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        # what safetensors raises: no errno, the OS error only in the message
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    target = tmp_path / "checkpoint.safetensors"
    with pytest.raises(DiskFullError) as caught:
        atomic_write_bytes(target, half_then_full)
    message = str(caught.value)
    assert f"writing {target} (" in message and " free there)" in message and "\n" not in message
    assert caught.value.errno == errno.ENOSPC and isinstance(caught.value, OSError)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary file


def test_a_full_disk_while_appending_to_a_log(tmp_path, monkeypatch):
    class Full:
        def __init__(self, handle):
            self.handle = handle

        def write(self, text):
            self.handle.write(text[:5])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: Full(real_open(self, *a, **k)))
    with pytest.raises(DiskFullError, match=r"writing .*layers\.jsonl \("):
        append_text(tmp_path / "layers.jsonl", '{"step": 2}\n')


def test_other_errors_are_not_taken_for_a_full_disk(tmp_path):
    def denied(tmp: str) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError):
        atomic_write_bytes(tmp_path / "x.json", denied)


def test_a_full_disk_anywhere_ends_in_one_line_and_exit_status_2(caplog):
    def body():
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/split.json")

    with caplog.at_level(logging.ERROR, logger="clipfit"):
        assert run_command(body) == 2
    assert "no space left on the device (or quota exceeded) writing /somewhere/split.json (" in caplog.text


def test_log_txt_that_cannot_be_written_costs_no_traceback(tmp_path, capsys):
    setup_logging()  # console handlers on this test's stderr
    run = RunDir(tmp_path)
    logger = logging.getLogger("clipfit.test")

    class FullStream:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    with run.console_log():
        handler = next(h for h in logging.getLogger("clipfit").handlers if getattr(h, "baseFilename", None))
        handler.stream.close()
        handler.stream = FullStream()
        logger.info("one")
        logger.info("two")
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err
    assert (
        err
        == f"WARNING: {tmp_path / 'log.txt'} is incomplete: writing it failed ([Errno 28] No space left on device)\n"
    )


# ----------------------------------------------------------------------------- the lock


def _holder_file(folder: Path, age: float = 0.0, **fields) -> Path:
    """A lock file as another process would have written it (``age`` seconds ago)."""
    record = {**asdict(LockHolder.this_process()), "command": "clipfit-train --epochs 4", **fields}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    path.write_text(json.dumps(record))
    if age:
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
    return path


@pytest.fixture
def live_process():
    """Another process of this machine that lives for the test."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_lock_records_its_holder_and_goes_when_the_run_ends(tmp_path):
    lock = RunLock(tmp_path / "out" / "run")
    lock.acquire()
    record = json.loads(lock.path.read_text())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert record["started"] and record["command"]
    lock.release()
    assert not (tmp_path / "out").exists()  # the folders made for a run that wrote nothing go too


def test_a_live_lock_stops_a_second_run_naming_its_holder(tmp_path, live_process):
    path = _holder_file(tmp_path, pid=live_process.pid, process_start=None)
    with pytest.raises(RunLockedError) as caught:
        RunLock(tmp_path).acquire()
    message = str(caught.value)
    assert f"is in use by another run (pid {live_process.pid} on {socket.gethostname()}" in message
    assert "clipfit-train --epochs 4" in message and str(path) in message
    assert json.loads(path.read_text())["pid"] == live_process.pid  # untouched


def test_a_second_lock_in_the_same_process_is_refused(tmp_path):
    first = RunLock(tmp_path)
    first.acquire()
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    first.release()


@pytest.mark.parametrize(
    ("fields", "age", "reason"),
    [
        ({"pid": "dead"}, 0, "no longer runs"),
        ({"pid": "live", "process_start": "another-boot:12"}, 0, "now belongs to another process"),
        (
            {"host": "elsewhere", "pid": 1},
            LOCK_STALE_S + 60,
            "not refreshed for 16 min, over the 15 min limit",
        ),
        ({"pid": "live", "pid_namespace": "pid:[1]"}, LOCK_STALE_S + 60, "another host or container"),
    ],
    ids=["dead-pid", "reused-pid", "other-host-old", "other-container-old"],
)
def test_a_stale_lock_is_reported_and_taken_over(tmp_path, caplog, live_process, fields, age, reason):
    if "process_start" in fields and LockHolder.this_process().process_start is None:
        pytest.skip("telling a reused pid apart needs Linux's /proc")
    fields = {**fields, "pid": {"dead": _dead_pid(), "live": live_process.pid}.get(fields["pid"], fields["pid"])}
    _holder_file(tmp_path, age, **fields)
    lock = RunLock(tmp_path)
    with caplog.at_level(logging.WARNING, logger="clipfit"):
        lock.acquire()
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert "taking over" in caplog.text and reason in caplog.text
    lock.release()


def test_a_recent_lock_of_another_host_is_live(tmp_path):
    _holder_file(tmp_path, age=LOCK_STALE_S - 60, host="elsewhere", pid=1)
    with pytest.raises(RunLockedError, match="pid 1 on elsewhere"):
        RunLock(tmp_path).acquire()


def test_an_unreadable_lock_is_being_written_until_it_is_old(tmp_path):
    path = tmp_path / LOCK_FILE
    path.write_text("")
    with pytest.raises(RunLockedError, match="a process that is just taking it"):
        RunLock(tmp_path).acquire()
    stamp = time.time() - 600
    os.utime(path, (stamp, stamp))
    lock = RunLock(tmp_path)
    lock.acquire()
    lock.release()


@pytest.mark.parametrize("write", ["config", "log"])
def test_a_run_whose_lock_was_taken_over_stops_before_writing(tmp_path, live_process, write):
    run = RunDir(tmp_path)
    with pytest.raises(RunLockedError, match="this run lost"), run.locked():
        _holder_file(tmp_path, pid=live_process.pid, process_start=None)  # judged us dead and took the folder
        if write == "config":
            run.write_config({"config": {}})
        else:
            run.log("metrics.jsonl").write([{"step": 2}])
    assert not (tmp_path / "config.json").exists() and not (tmp_path / "metrics.jsonl").exists()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == live_process.pid  # theirs stays


def test_the_lock_file_is_not_deleted_by_overwrite(tmp_path):
    run = RunDir(tmp_path)
    with run.locked():
        (tmp_path / "results.json").write_text("{}")
        run.clear()
        assert [p.name for p in tmp_path.iterdir()] == [LOCK_FILE]


def test_a_lock_that_cannot_be_created_is_one_clear_error(tmp_path):
    (tmp_path / "out").write_text("a file where the run directory should go")
    with pytest.raises(RunError, match="a parent of it is a file"):
        RunLock(tmp_path / "out" / "run").acquire()
    assert files.free_space(tmp_path / "missing" / "folder") != "unknown"
