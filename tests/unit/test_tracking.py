"""--report-to: the trainer feeds each metrics.jsonl row to the sinks; TensorBoard's event files and W&B's offline
run hold the same numbers; a missing package is refused with the pip command."""

from __future__ import annotations

import importlib.util
import json
import struct

import pytest
import torch

from clipfit import tracking
from clipfit.config import OptimConfig
from clipfit.engine import Trainer, TrainSettings
from clipfit.errors import ConfigError
from clipfit.models import build_model
from clipfit.recipes import apply_recipe
from clipfit.rundir import RunDir, read_jsonl

ROWS = [
    {"step": 2, "epoch": 0, "lr": 1e-5, "loss": 2.5, "ce": 2.4, "reg": 0.01, "acc": 25.0},
    {"step": 4, "epoch": 1, "lr": 2e-3, "loss": 1.5, "ce": 1.45, "reg": 0.05, "acc": 50.0},
]


def test_report_to_takes_open_clips_comma_separated_names():
    assert tracking.parse_report_to("tensorboard,wandb") == ["tensorboard", "wandb"]
    assert tracking.parse_report_to(" TensorBoard ,tensorboard") == ["tensorboard"]
    assert tracking.parse_report_to(None) == tracking.parse_report_to("none") == []
    with pytest.raises(ConfigError, match="unknown mlflow; choose from tensorboard, wandb"):
        tracking.parse_report_to("tensorboard,mlflow")


def test_a_missing_tracker_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(
        ConfigError, match=r"needs the wandb package, which is not installed: pip install \"clipfit\[wandb\]\""
    ):
        tracking.parse_report_to("wandb")


class FakeSink:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def __call__(self, row) -> None:
        self.rows.append(dict(row))


def test_the_trainer_feeds_every_metrics_row_to_its_sinks(tiny_weights, shapes_task, tmp_path):
    bundle = build_model("clipfit-tiny", tiny_weights)
    trained = apply_recipe(bundle.model, "clipfit")
    sink = FakeSink()
    settings = TrainSettings(
        OptimConfig(lr=0.002, epochs=1, batch_size=4, warmup_epochs=0, reg_weight=8.0),
        seed=1, device=torch.device("cpu"), log_every=3,
    )  # fmt: skip
    meta = {"model": bundle.name, "pretrained": bundle.pretrained, "recipe": "clipfit"}
    trainer = Trainer(bundle, trained, shapes_task(), settings, run_dir=RunDir(tmp_path), checkpoint_meta=meta,
                      sinks=[sink])  # fmt: skip
    trainer.fit()
    assert sink.rows and sink.rows == read_jsonl(tmp_path / "metrics.jsonl")


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_event_files_hold_the_rows_and_the_results(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (sink,) = tracking.open_sinks(["tensorboard"], tmp_path, {}, "run")
    for row in ROWS:
        sink(row)
    tracking.close_sinks([sink], {"base_acc": 61.0, "new_acc": None, "hm": 56.1})
    events = EventAccumulator(str(tmp_path / tracking.TENSORBOARD_DIR))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert set(scalars) == {f"train/{k}" for k in ("epoch", "lr", "loss", "ce", "reg", "acc")} | {
        "test/base_acc", "test/hm"
    }  # fmt: skip
    loss = events.Scalars("train/loss")
    assert [(e.step, e.value) for e in loss] == [(2, 2.5), (4, 1.5)]
    assert events.Scalars("test/hm")[0].value == pytest.approx(56.1)


def _wandb_records(path):
    """The records of W&B's transaction log (``run-*.wandb``): LevelDB's log format, 32 KiB blocks of
    (crc32, length, type) chunks after a 7-byte file header, each record a protobuf ``Record``."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, pending = path.read_bytes(), 32768, 7, b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a chunk header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_wandb_offline_run_holds_the_rows_and_the_results(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (sink,) = tracking.open_sinks(["wandb"], tmp_path / "run", {"recipe": "clipfit"}, "shapes/clipfit/seed1")
    for row in ROWS:
        sink(row)
    tracking.close_sinks([sink], {"hm": 56.1})
    wandb.teardown()  # W&B's service writes the run's log in the background: wait for it
    (log,) = (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*/run-*.wandb")
    history, summary = [], {}
    for record in _wandb_records(log):
        if record.WhichOneof("record_type") == "history":
            history.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
        elif record.WhichOneof("record_type") == "summary":
            summary.update(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.summary.update}
            )
    assert [(h["_step"], h["train/loss"], h["train/acc"]) for h in history] == [(2, 2.5, 25.0), (4, 1.5, 50.0)]
    assert summary["test/hm"] == 56.1 and summary["train/loss"] == 1.5


def test_a_failing_tracker_only_warns_when_closed(caplog):
    class Broken(FakeSink):
        def summary(self, metrics) -> None:
            raise RuntimeError("disk full")

        def close(self) -> None:  # pragma: no cover - summary raised first
            pass

    tracking.close_sinks([Broken()], {"hm": 1.0})
    assert "closing Broken failed: RuntimeError: disk full" in caplog.text
