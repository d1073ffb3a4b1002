"""Per-layer parameter change between pretrained and fine-tuned values (paper Fig. 3; Fig. 4 right).

For every trained tensor with pretrained value theta0 and fine-tuned value theta1, d = theta1 - theta0:

    sq_change  = ||d||_2^2 = sum_i d_i^2      (the paper's measure, squared L2 distance per layer)
    l2_change  = ||d||_2
    rel_change = ||d||_2 / ||theta0||_2       (NaN when theta0 is all zeros)
    init_norm  = ||theta0||_2

computed in float64. Grouping and order come from :mod:`clipfit.layers` (text FFN-out biases by
block; image LayerNorm weights and biases by position: ln_pre, each block's ln_1/ln_2, ln_post).
Fig. 4 right is the same table for two checkpoints trained with lambda = 8 and lambda = 0.

Over training, the run's ``layers.jsonl`` already holds ``sq_change`` of every tensor at every
logged step; :func:`change_over_steps` tabulates it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import pandas as pd
import torch

from analysis.errors import AnalysisError
from analysis.schemas import PARAM_CHANGE, PARAM_STEPS, conform
from analysis.tables import layer_frame


def tensor_change(init: torch.Tensor, final: torch.Tensor) -> dict[str, float]:
    """sq_change, l2_change, rel_change and init_norm of one tensor (see the module docstring)."""
    if tuple(init.shape) != tuple(final.shape):
        raise AnalysisError(f"initial and final values differ in shape: {tuple(init.shape)} vs {tuple(final.shape)}")
    theta0 = init.detach().to("cpu", torch.float64)
    delta = final.detach().to("cpu", torch.float64) - theta0
    sq = float(delta.pow(2).sum())
    init_norm = float(theta0.norm())
    l2 = math.sqrt(sq)
    return {
        "init_norm": init_norm,
        "sq_change": sq,
        "l2_change": l2,
        "rel_change": l2 / init_norm if init_norm > 0 else math.nan,
    }


def param_change(
    init: Mapping[str, torch.Tensor], final: Mapping[str, torch.Tensor], checkpoint: str = ""
) -> pd.DataFrame:
    """The PARAM_CHANGE table of one checkpoint: a row per tensor of ``final``, in forward order.

    Args:
        init: pretrained values by parameter name (every name of ``final`` must be there).
        final: fine-tuned values by parameter name.
        checkpoint: the label of this checkpoint in the ``checkpoint`` column.
    """
    missing = [n for n in final if n not in init]
    if missing:
        raise AnalysisError(f"no pretrained value for {len(missing)} trained tensors (e.g. {missing[0]})")
    frame = layer_frame(final)
    numbers = pd.DataFrame([tensor_change(init[n], final[n]) for n in frame["name"]])
    frame["numel"] = [int(final[n].numel()) for n in frame["name"]]
    frame = pd.concat([frame, numbers], axis=1)
    frame.insert(0, "checkpoint", checkpoint)
    return conform(frame, PARAM_CHANGE)


def combine(tables: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Several checkpoints' tables stacked (checkpoint labels must differ)."""
    tables = list(tables)
    labels = [t["checkpoint"].iloc[0] for t in tables if len(t)]
    if len(set(labels)) != len(labels):
        raise AnalysisError(f"checkpoint labels must be distinct, got {labels}; pass --labels")
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(PARAM_CHANGE))


def group_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint and group: tensors, values, summed sq_change, and the tensor that moved most."""
    rows = []
    for (checkpoint, group), part in table.groupby(["checkpoint", "group"], sort=False):
        top = part.loc[part["sq_change"].idxmax()]
        rows.append(
            {
                "checkpoint": checkpoint,
                "group": group,
                "tensors": len(part),
                "numel": int(part["numel"].sum()),
                "sq_change": float(part["sq_change"].sum()),
                "top_position": top["position"],
                "top_sq_change": float(top["sq_change"]),
            }
        )
    return pd.DataFrame(rows)


def change_over_steps(records: Iterable[Mapping], checkpoint: str = "") -> pd.DataFrame:
    """The PARAM_STEPS table from ``layers.jsonl`` records (step, epoch, name, sq_change, ...)."""
    frame = pd.DataFrame(list(records))
    if frame.empty:
        return pd.DataFrame(columns=list(PARAM_STEPS))
    needed = {"step", "epoch", "name", "sq_change"}
    if not needed <= set(frame.columns):
        raise AnalysisError(f"layers.jsonl records lack {sorted(needed - set(frame.columns))}")
    layers = layer_frame(frame["name"].unique())
    frame = frame[["step", "epoch", "name", "sq_change"]].merge(layers, on="name", how="left")
    frame.insert(0, "checkpoint", checkpoint)
    frame = frame.sort_values(["step", "order"], kind="stable")
    return conform(frame, PARAM_STEPS)
