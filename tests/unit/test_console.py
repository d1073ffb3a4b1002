"""What every command shows on the console: --help without torch, log lines beside progress bars, heartbeats."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMANDS = {
    "clipfit-train": "clipfit.cli.train",
    "clipfit-eval": "clipfit.cli.eval",
    "clipfit-data": "clipfit.cli.data",
    "clipfit-predict": "clipfit.cli.predict",
    "clipfit-export": "clipfit.cli.export",
    "clipfit-analyze": "analysis.cli",
}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_imports_neither_torch_nor_open_clip(command):
    """--help answers at once: the heavy libraries load only after the arguments are parsed (not a timing test:
    what it checks is which modules a fresh interpreter holds after printing the help)."""
    code = (
        "import sys\n"
        f"from {COMMANDS[command]} import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'open_clip', 'torchvision', 'timm'})\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"usage: {command}" in done.stdout
    assert "HEAVY []" in done.stdout, done.stdout.splitlines()[-1]


# ----------------------------------------------------------------------------- log lines and progress bars


def test_log_lines_never_overwrite_a_progress_bar(capsys):
    from tqdm import tqdm

    from clipfit.console import setup_logging

    setup_logging()
    with tqdm(total=10, desc="train", file=sys.stdout, disable=False, mininterval=0, ascii=True) as bar:
        bar.update(5)
        logging.getLogger("clipfit.engine").info("epoch 5/10 loss 0.500")
        bar.update(5)
    out = capsys.readouterr().out
    line = next(line for line in out.split("\n") if "epoch 5/10" in line)
    # the bar was cleared (carriage return) before the line; a plain handler writes the line after the bar's text
    assert line.rsplit("\r", 1)[-1] == "epoch 5/10 loss 0.500", repr(line)
    assert "10/10" in out.split("epoch 5/10 loss 0.500", 1)[1]  # and redrawn after it


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_heartbeat_in_a_log_says_where_how_fast_and_how_long(capsys):
    from clipfit.console import Heartbeat, setup_logging

    setup_logging()
    clock = _Clock()
    beat = Heartbeat(200, "train", every=50, clock=clock)
    for step in range(1, 201):
        clock.now += 0.1  # 32 images per 0.1 s
        beat.update(1, 32, epoch=f"{1 + (step - 1) // 20}/10")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("train:")]
    assert len(lines) == 4  # steps 50, 100, 150, 200
    assert lines[0] == "train: step 50/200 (25%)  320.0 img/s  elapsed 0:00:05  ETA 0:00:15  epoch 3/10"
    assert lines[-1].startswith("train: step 200/200 (100%)") and "ETA 0:00:00" in lines[-1]


def test_heartbeat_of_a_resumed_run_counts_from_where_it_resumed(capsys):
    from clipfit.console import Heartbeat, setup_logging

    setup_logging()
    clock = _Clock()
    beat = Heartbeat(100, "train", initial=60, every=20, clock=clock)
    for _ in range(20):
        clock.now += 0.5
        beat.update(1, 10)
    assert "train: step 80/100 (80%)  20.0 img/s  elapsed 0:00:10  ETA 0:00:10" in capsys.readouterr().out


def test_no_heartbeat_on_a_terminal_or_when_turned_off(capsys, monkeypatch):
    from clipfit.console import Heartbeat, setup_logging

    setup_logging()
    monkeypatch.setenv("CLIPFIT_HEARTBEAT", "0")
    off = Heartbeat(10, "train")
    monkeypatch.setenv("CLIPFIT_HEARTBEAT", "2")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    terminal = Heartbeat(10, "train")
    for _ in range(10):
        off.update(1, 4)
        terminal.update(1, 4)
    assert "train:" not in capsys.readouterr().out


def test_training_in_a_log_writes_heartbeat_lines(tiny, shapes_task, make_trainer, tmp_path, capsys, monkeypatch):
    from clipfit.console import setup_logging
    from clipfit.recipes import apply_recipe

    monkeypatch.setenv("CLIPFIT_HEARTBEAT", "2")
    setup_logging()
    trained = apply_recipe(tiny.model, "clipfit")
    trainer = make_trainer(tiny, trained, shapes_task(classes=4, shots=2), epochs=2)  # 8 images: 2 steps an epoch
    trainer.fit()
    beats = [line for line in capsys.readouterr().out.splitlines() if line.startswith("train: step")]
    assert [b.split("  ")[0] for b in beats] == ["train: step 2/4 (50%)", "train: step 4/4 (100%)"]
    assert "img/s" in beats[0] and "ETA" in beats[0] and "epoch 1/2" in beats[0] and "epoch 2/2" in beats[1]
    assert "loss" in beats[1]  # the first epoch's, once it has ended


def test_next_commands_name_their_outputs_after_the_run_even_for_an_absolute_folder():
    from clipfit.console import next_commands

    default = next_commands("runs/demo/shapes/base2new/clipfit/shots16/seed1")
    assert "--out reports/shapes-base2new-clipfit-shots16-seed1" in default
    assert "--out exports/shapes-base2new-clipfit-shots16-seed1" in default
    elsewhere = next_commands("/tmp/my run")
    assert "--out 'reports/tmp-my run'" in elsewhere and "//" not in elsewhere and "'/tmp/my run'" in elsewhere
