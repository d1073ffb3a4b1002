"""Small shared pieces of the analysis tables: layer columns and JSON-lines logs.

Layer columns are a tabulation of :func:`clipfit.layers.describe`, the one definition of "layer";
nothing here groups or orders tensors any other way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from analysis.errors import AnalysisError
from analysis.schemas import LAYER
from clipfit.layers import describe, ordered


def layer_frame(names: Iterable[str]) -> pd.DataFrame:
    """One row per tensor name with the LAYER columns, in forward order (``order`` = 0, 1, ...)."""
    rows = [
        {**layer.columns(), "position": layer.label, "order": i}
        for i, layer in enumerate(ordered(dict.fromkeys(names)))
    ]
    frame = pd.DataFrame(rows, columns=list(LAYER))
    frame["block"] = frame["block"].astype("Int64")
    return frame


def layer_of(name: str) -> dict:
    """The LAYER columns of one name except ``order`` (for tables built row by row)."""
    layer = describe(name)
    return {**layer.columns(), "position": layer.label}


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines file (blank lines skipped); a broken line names the file and line."""
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AnalysisError(f"{path}:{number} is not a JSON line: {exc}") from None
    return records
