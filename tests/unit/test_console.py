"""What every command shows on the console: --help without torch, log lines beside progress bars, heartbeats."""

from __future__ import annotations

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
