"""Writing what an analysis produced: tidy CSV tables, figures, and the JSON sidecar.

Every figure gets its data beside it (``<stem>.csv``) and a sidecar ``<stem>.json`` with the
signature(s) of what was analysed, the command line, the versions, and a short summary.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from clipfit.provenance import versions

PROGRAM = "clipfit-analyze"


def command_line(argv: Sequence[str]) -> str:
    """The command as a user would type it."""
    return shlex.join([PROGRAM, *argv])


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return value


def machine() -> str:
    """The machine this process runs on, in words: CPU model, its logical cores, and the GPUs torch sees.

    e.g. ``AMD EPYC, 2 cores; no GPU`` or ``Intel(R) Xeon(R) Platinum 8480+, 224 cores; GPU: NVIDIA H200``.
    """
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:  # Linux: the model name of the first core
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    cpu = cpu or platform.processor() or platform.machine() or "unknown CPU"
    import torch

    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    names = ", ".join(f"{n}× {name}" if n > 1 else name for name, n in _counts(gpus).items())
    return f"{cpu}, {os.cpu_count()} cores; " + (f"GPU: {names}" if gpus else "no GPU")


def _counts(items: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


class OutputDir:
    """The ``--out`` folder of one analysis."""

    def __init__(self, path: str | Path, argv: Sequence[str], analysis: str) -> None:
        self.path = Path(path).expanduser()
        self.path.mkdir(parents=True, exist_ok=True)
        self.argv = list(argv)
        self.analysis = analysis

    def table(self, frame: pd.DataFrame, stem: str) -> Path:
        """``<stem>.csv``: the tidy table, full float precision, no index."""
        path = self.path / f"{stem}.csv"
        frame.to_csv(path, index=False)
        return path

    def text(self, content: str, name: str) -> Path:
        path = self.path / name
        path.write_text(content, encoding="utf-8")
        return path

    def sidecar(self, stem: str, signatures: Sequence[str], files: Sequence[Path], summary: dict | None = None) -> Path:
        """``<stem>.json``: what was analysed (signatures), how (command line), with what (versions)."""
        signatures = list(dict.fromkeys(signatures))
        record = {
            "analysis": self.analysis,
            "signature": signatures[0] if len(signatures) == 1 else " + ".join(signatures),
            "signatures": signatures,
            "command": command_line(self.argv),
            "argv": self.argv,
            "versions": versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": sorted({p.name for p in files}),
            "summary": _jsonable(summary or {}),
        }
        path = self.path / f"{stem}.json"
        path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path
