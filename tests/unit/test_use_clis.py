"""clipfit-predict and clipfit-export from the command line, and --version on every command."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import pytest
import torch
from trained_runs import CLASSNAMES, fake_run, shapes_pngs

import clipfit
from analysis import cli as analyze_cli
from clipfit.cli import data as data_cli
from clipfit.cli import eval as eval_cli
from clipfit.cli import export as export_cli
from clipfit.cli import predict as predict_cli
from clipfit.cli import train as train_cli
from clipfit.models import build_model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from safetensors.torch import save_file

    torch.manual_seed(1234)
    weights = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in build_model("clipfit-tiny", "none").model.state_dict().items()}, weights)
    return fake_run(tmp_path_factory.mktemp("runs") / "clipfit", str(weights), "clipfit")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    shapes_pngs(root / "a", count=2)
    shapes_pngs(root / "b" / "deeper", count=2)
    (root / "notes.txt").write_text("not an image, not listed")
    return root


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_predict_writes_one_csv_row_per_image_with_new_class_names(run, folder, tmp_path, capsys):
    names = tmp_path / "classes.txt"
    names.write_text("purple heart\n\ncyan ring\norange cross\n")
    out = tmp_path / "preds" / "predictions.csv"
    argv = [str(run), str(folder), "--classnames", str(names), "--top-k", "2", "--out", str(out)]
    assert predict_cli.main(argv) == 0
    rows = _rows(out.read_text())
    assert list(rows[0]) == ["path", "label_1", "prob_1", "label_2", "prob_2", "error"]
    assert [r["path"] for r in rows] == sorted(str(p) for p in folder.rglob("*.png"))
    model = clipfit.load(run)
    expected = model.predict(sorted(folder.rglob("*.png")), ["purple heart", "cyan ring", "orange cross"], top_k=2)
    for row, prediction in zip(rows, expected, strict=True):
        assert [row["label_1"], row["label_2"]] == prediction.labels and row["error"] == ""
        assert float(row["prob_1"]) == pytest.approx(prediction.probs[0], abs=1e-6)
    assert "4 images classified" in capsys.readouterr().out


def test_predict_to_standard_output_reports_unreadable_images_and_classifies_the_rest(run, folder, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    assert predict_cli.main([str(run), str(folder / "a"), str(broken), "--top-k", "1"]) == 1
    captured = capsys.readouterr()
    rows = _rows(captured.out)  # standard output holds the CSV alone
    assert [r["label_1"] in CLASSNAMES for r in rows] == [True, True, False]
    assert rows[2]["path"] == str(broken) and "cannot read image" in rows[2]["error"]
    assert f"cannot read image {broken}" in captured.err and "1 of 3 images could not be read" in captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nowhere.png"], "no such image file or folder: nowhere.png"),
        (["{empty}"], "holds no images"),
        (["{folder}", "--top-k", "0"], "--top-k and --batch-size must be at least 1"),
        (["{folder}", "--classnames", "missing.txt"], "class-name file missing.txt not found"),
    ],
)
def test_predict_refuses_bad_arguments_before_loading_a_model(run, folder, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    argv = [str(run), *(a.format(folder=folder, empty=tmp_path / "empty") for a in args)]
    assert predict_cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_export_prints_the_exact_open_clip_call(run, tmp_path, capsys):
    assert export_cli.main([str(run), "--out", str(tmp_path / "export")]) == 0
    out = capsys.readouterr().out
    merged = tmp_path / "export" / "open_clip_model.safetensors"
    assert f'open_clip.create_model("clipfit-tiny", pretrained="{merged}")' in out
    assert f'open_clip.create_model("local-dir:{tmp_path / "export"}")' in out
    assert f'clipfit.load("{tmp_path / "export"}")' in out
    assert export_cli.main([str(run)]) == 2  # neither --out nor --push-to-hub
    assert "--out DIR, --push-to-hub USER/REPO, or both" in capsys.readouterr().err


def test_predict_and_export_help_import_neither_torch_nor_open_clip():
    code = (
        "import sys, clipfit.cli.predict, clipfit.cli.export; print(sorted({'torch', 'open_clip'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # --help and --version answer at once; the model is loaded after the arguments


@pytest.mark.parametrize("cli", [train_cli, eval_cli, data_cli, predict_cli, export_cli, analyze_cli])
def test_every_command_has_version(cli, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip().endswith(f"(clipfit {clipfit.__version__})")
