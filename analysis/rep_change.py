"""How much each block's representation moved: linear CKA between pretrained and fine-tuned
hidden states on the same inputs (the paper's "changes in representations").

For n inputs, X (n x p) the pooled hidden states of a block under the pretrained model and
Y (n x q) under the fine-tuned one, with columns centred (Xc = X - mean over inputs):

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F * ||Yc^T Yc||_F)        (Kornblith et al., 2019)

computed in float64. CKA is 1 for representations equal up to rotation and isotropic scaling
and falls towards 0 as they decorrelate, so 1 - CKA reads as "how much the block changed".

CKA centres the features, so it cannot see a constant shift: CKA(X, X + 1 c^T) = 1 for every vector c. A
bias that moves (ClipFit trains the text FFN biases; block 0's adds the same vector to every prompt's state)
shows up instead in the shift of the mean feature, relative to the pretrained mean's norm:

    mean_shift = ||mean_i Y_i - mean_i X_i||_2 / ||mean_i X_i||_2        (NaN when mean_i X_i = 0)

The image tower is measured on test images, the text tower on the class prompts. Over the runs (seeds)
of a configuration, :func:`rep_change_configs` gives the mean and sample std of both per block.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd
import torch

from analysis.configs import over_runs
from analysis.errors import AnalysisError
from analysis.schemas import REP_CHANGE, REP_CONFIGS, conform


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two (n, p) and (n, q) representations of the same n inputs (see above).

    Returns NaN when a representation is constant over the inputs (zero after centring).
    """
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise AnalysisError(
            f"CKA needs two 2-D representations of the same inputs, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if len(x) < 2:
        raise AnalysisError("CKA needs at least two inputs")
    x = x.double() - x.double().mean(dim=0, keepdim=True)
    y = y.double() - y.double().mean(dim=0, keepdim=True)
    cross = (y.T @ x).pow(2).sum()
    norm = (x.T @ x).norm() * (y.T @ y).norm()
    return float(cross / norm) if norm > 0 else math.nan


def mean_shift(x: torch.Tensor, y: torch.Tensor) -> float:
    """||mean(Y) - mean(X)|| / ||mean(X)|| over the inputs (rows), in float64: the change CKA cannot see (above).

    NaN when the pretrained mean is zero or the two representations differ in width.
    """
    if x.shape != y.shape:
        return math.nan
    before, after = x.double().mean(dim=0), y.double().mean(dim=0)
    norm = before.norm()
    return float((after - before).norm() / norm) if norm > 0 else math.nan


def rep_change(
    before: Mapping[str, Mapping[str, torch.Tensor]], after: Mapping[str, Mapping[str, torch.Tensor]]
) -> pd.DataFrame:
    """The REP_CHANGE table: CKA per tower and block.

    Args:
        before: tower ("image", "text") -> block key ("0", "1", ..., "output") -> (n, d) states of
            the pretrained model.
        after: the same for the fine-tuned model, on the same inputs in the same order.
    """
    rows = []
    for tower, blocks in before.items():
        depth = sum(key.isdigit() for key in blocks)
        for key, x in blocks.items():
            y = after[tower][key]
            is_block = key.isdigit()
            rows.append(
                {
                    "tower": tower,
                    "block": int(key) if is_block else None,
                    "position": key,
                    "order": int(key) if is_block else depth,
                    "inputs": len(x),
                    "cka": linear_cka(x, y),
                    "mean_shift": mean_shift(x, y),
                }
            )
    frame = pd.DataFrame(rows, columns=list(REP_CHANGE))
    frame["block"] = frame["block"].astype("Int64")
    return conform(frame.sort_values(["tower", "order"], kind="stable"), REP_CHANGE)


def rep_change_configs(runs: pd.DataFrame) -> pd.DataFrame:
    """The REP_CONFIGS table: CKA and the mean shift per configuration, tower and block, mean and sample std over
    the runs (REP_RUNS rows: REP_CHANGE with ``checkpoint`` and ``configuration``)."""
    stats = over_runs(runs, ["configuration", "tower", "block", "position", "order"], ["cka", "mean_shift"])
    inputs = runs.groupby(["configuration", "tower"], sort=False)["inputs"].min()
    stats["inputs"] = [int(inputs[(c, t)]) for c, t in zip(stats["configuration"], stats["tower"], strict=True)]
    stats["block"] = stats["block"].astype("Int64")
    return conform(stats, REP_CONFIGS)
