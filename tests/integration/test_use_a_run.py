"""From training to use, as the README shows it: train, then predict on new images with new class names, export,
and load the export in open_clip to the same logits; and --report-to tensorboard (where it is installed)."""

from __future__ import annotations

import csv

import open_clip
import pytest
import torch
from PIL import Image
from trained_runs import shapes_pngs

import clipfit
from clipfit.cli import export as export_cli
from clipfit.cli import predict as predict_cli
from clipfit.cli import train
from clipfit.rundir import read_jsonl

pytestmark = pytest.mark.slow  # a clipfit-train run


def test_report_to_tensorboard_gets_the_metrics_rows(tiny_argv, tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run = tmp_path / "run"
    assert train.main(tiny_argv(run, "--report-to", "tensorboard", log_every=2)) == 0
    events = accumulator.EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    rows = read_jsonl(run / "metrics.jsonl")
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("train/loss")] == [
        (r["step"], round(r["loss"], 4)) for r in rows
    ]
    assert events.Scalars("test/hm")


def test_train_predict_export_and_load_in_open_clip(tiny_argv, tmp_path, capsys):
    run = tmp_path / "run"
    argv = [a for a in tiny_argv(run) if a != "-q"]
    assert train.main(argv) == 0
    out = capsys.readouterr().out
    assert f"clipfit-predict {run} IMAGES_OR_FOLDER" in out and f"clipfit-export {run} --out" in out

    # predict new class names on image files
    images = shapes_pngs(tmp_path / "images", count=4)
    names = tmp_path / "new.txt"
    names.write_text("purple heart\ncyan ring\norange cross\n")
    assert predict_cli.main([str(run), str(tmp_path / "images"), "--classnames", str(names), "--top-k", "2",
                             "--out", str(tmp_path / "preds.csv")]) == 0  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "preds.csv").open()))
    assert len(rows) == 4 and all(r["label_1"] in ("purple heart", "cyan ring", "orange cross") for r in rows)

    # export, and open_clip loads the merged file to the run's logits
    assert export_cli.main([str(run), "--out", str(tmp_path / "export")]) == 0
    finetuned = clipfit.load(run)
    model = open_clip.create_model(f"local-dir:{tmp_path / 'export'}").eval()
    pixels = torch.stack([finetuned.preprocess(Image.open(p)) for p in images])
    tokens = finetuned.tokenizer([finetuned.template.format(c) for c in ("purple heart", "cyan ring")])
    with torch.no_grad():
        image, text, scale = model(pixels, tokens)[:3]
    expected = finetuned.logits(images, ["purple heart", "cyan ring"])
    assert (scale * image @ text.T - expected).abs().max() < 1e-4
