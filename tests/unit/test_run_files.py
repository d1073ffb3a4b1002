"""The run directory's files survive kills and full disks: torn logs."""

from __future__ import annotations

import json
import logging

from clipfit.rundir import JsonlLog, read_jsonl


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
