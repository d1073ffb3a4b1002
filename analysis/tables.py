"""Layer columns of the analysis tables: a tabulation of :func:`clipfit.layers.describe`."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from analysis.schemas import LAYER
from clipfit.layers import ordered


def layer_frame(names: Iterable[str]) -> pd.DataFrame:
    """One row per tensor name with the LAYER columns, in forward order (``order`` = 0, 1, ...)."""
    rows = [
        {**layer.columns(), "position": layer.label, "order": i}
        for i, layer in enumerate(ordered(dict.fromkeys(names)))
    ]
    frame = pd.DataFrame(rows, columns=list(LAYER))
    frame["block"] = frame["block"].astype("Int64")
    return frame
