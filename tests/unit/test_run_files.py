"""The run directory's files survive kills and full disks: torn logs, disk-full errors."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest

from clipfit.console import run_command, setup_logging
from clipfit.files import DiskFullError, append_text, atomic_write_bytes
from clipfit.rundir import JsonlLog, RunDir, read_jsonl


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
