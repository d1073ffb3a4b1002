"""Within a tensor: how the change is spread over its channels, and which channels moved most.

For a 1-D tensor (a LayerNorm gain or bias, a bias vector) with pretrained values theta0 and fine-tuned
values theta1, channel i changed by d_i = theta1_i - theta0_i; its share of the tensor's change is
x_i = d_i^2 / sum_j d_j^2 (the paper's squared L2 measure, split by channel). Over the n channels:

    top1_share  = sum of the ceil(0.01 n) largest x_i     (at least one channel)
    top10_share = sum of the ceil(0.10 n) largest x_i
    gini        = sum_{i=1..n} (2i - n - 1) x_(i) / n      (x_(i) ascending; 0 = spread evenly, (n-1)/n = one channel)

(NaN where the tensor did not move). ``rank`` orders a tensor's channels by d_i^2, largest first (rank 1).
Only 1-D tensors are read: a channel of a LayerNorm or a bias is one value, which makes "the channel that
moved most" a named number (tensor, index, change).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from analysis.errors import AnalysisError
from analysis.schemas import CHANNEL_CONCENTRATION, CHANNELS, conform
from analysis.tables import layer_frame


def concentration(changes: np.ndarray) -> dict[str, float]:
    """top1_share, top10_share and gini of one tensor's per-channel changes d (see the module docstring)."""
    squared = np.sort(np.asarray(changes, dtype=np.float64) ** 2)  # ascending
    n, total = len(squared), float(squared.sum())
    if n == 0 or total == 0:
        return {"top1_share": math.nan, "top10_share": math.nan, "gini": math.nan}
    share = squared / total
    top = share[::-1]
    index = np.arange(1, n + 1)
    return {
        "top1_share": float(top[: max(1, math.ceil(0.01 * n))].sum()),
        "top10_share": float(top[: max(1, math.ceil(0.10 * n))].sum()),
        "gini": float(((2 * index - n - 1) * share).sum() / n),
    }


def vector_names(final: Mapping[str, torch.Tensor]) -> list[str]:
    """The 1-D tensors of ``final`` (LayerNorm gains and biases, bias vectors)."""
    return [name for name, value in final.items() if value.ndim == 1 and value.numel() > 1]


def channel_tables(
    init: Mapping[str, torch.Tensor],
    final: Mapping[str, torch.Tensor],
    checkpoint: str = "",
    configuration: str = "",
    max_tensors: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(CHANNELS, CHANNEL_CONCENTRATION) of one checkpoint's 1-D tensors.

    The concentration table has a row per 1-D tensor, in forward order; the channel table every channel of the
    ``max_tensors`` tensors that moved most (all of them when None).
    """
    names = vector_names(final)
    if not names:
        raise AnalysisError("no 1-D tensors (LayerNorm gains and biases, biases) among the compared tensors")
    missing = [n for n in names if n not in init]
    if missing:
        raise AnalysisError(f"no pretrained value for {missing[0]}")
    layers = layer_frame(names).set_index("name", drop=False)
    summary, channel_rows = [], []
    deltas = {n: (final[n].double() - init[n].double()).cpu().numpy() for n in names}
    totals = {n: float((deltas[n] ** 2).sum()) for n in names}
    kept = sorted(names, key=lambda n: -totals[n])[: max_tensors or None]
    for name in layers.index:
        d = deltas[name]
        top = int(np.argmax(np.abs(d)))
        summary.append(
            {**layers.loc[name].to_dict(), "channels": len(d), "sq_change": totals[name], **concentration(d),
             "top_channel": top, "top_change": float(d[top])}
        )  # fmt: skip
        if name in kept:
            sq = d**2
            rank = np.empty(len(d), dtype=np.int64)
            rank[np.argsort(-sq, kind="stable")] = np.arange(1, len(d) + 1)
            frame = pd.DataFrame(
                {
                    "channel": np.arange(len(d)),
                    "init": init[name].double().cpu().numpy(),
                    "final": final[name].double().cpu().numpy(),
                    "change": d,
                    "sq_change": sq,
                    "rank": rank,
                }
            )
            for column, value in layers.loc[name].items():
                frame[column] = value
            channel_rows.append(frame)
    summary_frame = pd.DataFrame(summary)
    channels = pd.concat(channel_rows, ignore_index=True)
    for frame in (summary_frame, channels):
        frame["checkpoint"], frame["configuration"] = checkpoint, configuration
        frame["block"] = frame["block"].astype("Int64")
    return conform(channels, CHANNELS), conform(summary_frame, CHANNEL_CONCENTRATION)


def top_channels(channels: pd.DataFrame, k: int = 12) -> pd.DataFrame:
    """The ``k`` channels of each checkpoint with the largest squared change, across its tensors (CHANNELS rows)."""
    return (
        channels.sort_values(["checkpoint", "sq_change"], ascending=[True, False], kind="stable")
        .groupby("checkpoint", sort=False)
        .head(k)
        .reset_index(drop=True)
    )
