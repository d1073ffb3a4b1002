"""Gradient consistency: the cosine between successive gradients of each trained tensor, over training.

The released instrumentation printed, for each text bias, the cosine between this step's gradient g_t
and the previous step's g_{t-1}; clipfit's trainer logs it for every trained tensor as ``grad_cos`` in
layers.jsonl (at the logged steps; null on a run's first step):

    grad_cos_t(theta) = <g_t, g_{t-1}> / (||g_t|| ||g_{t-1}||)

Near 1, successive batches push the tensor the same way (a consistent direction); near 0 or below, the
updates mostly cancel. Over the R logged records of a tensor (steps in order):

    mean_cos       = (1/R) sum_r grad_cos_r
    early_cos      = mean over the first ceil(R/10) records,  late_cos = over the last ceil(R/10)
    positive_share = |{r : grad_cos_r > 0}| / R

Runs written before clipfit logged grad_cos have none: :func:`grad_cos_steps` returns no rows for them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import pandas as pd

from analysis.schemas import GRAD_COS, GRAD_COS_STEPS, conform
from analysis.tables import layer_frame


def has_grad_cos(records: Iterable[Mapping]) -> bool:
    """Whether any record of a layers.jsonl carries a grad_cos value."""
    return any(r.get("grad_cos") is not None for r in records)


def grad_cos_steps(records: Iterable[Mapping], checkpoint: str = "", configuration: str = "") -> pd.DataFrame:
    """The GRAD_COS_STEPS rows of one run's layers.jsonl records (records without a value left out)."""
    frame = pd.DataFrame([r for r in records if r.get("grad_cos") is not None])
    if frame.empty:
        return pd.DataFrame(columns=list(GRAD_COS_STEPS))
    layers = layer_frame(frame["name"].unique())
    frame = frame[["step", "epoch", "name", "grad_cos"]].merge(layers, on="name", how="left")
    frame["checkpoint"], frame["configuration"] = checkpoint, configuration
    return conform(frame.sort_values(["step", "order"], kind="stable"), GRAD_COS_STEPS)


def grad_cos_summary(steps: pd.DataFrame) -> pd.DataFrame:
    """The GRAD_COS table: per run and tensor, the mean cosine over all, the first and the last tenth of its
    records, and the share of positive ones (module docstring)."""
    rows = []
    keys = ["checkpoint", "configuration", "name"]
    for _, part in steps.sort_values("step", kind="stable").groupby(keys, sort=False):
        values = part["grad_cos"].astype(float).to_numpy()
        tenth = max(1, math.ceil(len(values) / 10))
        first = part.iloc[0]
        rows.append(
            {**first.to_dict(), "records": len(values), "mean_cos": float(values.mean()),
             "early_cos": float(values[:tenth].mean()), "late_cos": float(values[-tenth:].mean()),
             "positive_share": float((values > 0).mean())}
        )  # fmt: skip
    if not rows:
        return pd.DataFrame(columns=list(GRAD_COS))
    frame = pd.DataFrame(rows)
    runs = {c: i for i, c in enumerate(dict.fromkeys(steps["checkpoint"]))}  # the runs in the order given
    frame = frame.assign(run=frame["checkpoint"].map(runs)).sort_values(["run", "order"], kind="stable")
    frame["block"] = frame["block"].astype("Int64")
    return conform(frame, GRAD_COS)
