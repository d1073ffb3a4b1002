"""The training curves: loss, its two terms and the accuracy per logged step, from a run's metrics.jsonl.

The trainer writes one metrics.jsonl row every ``--log-every`` steps and at each epoch's end, each the mean
over the steps since the previous row (clipfit.engine; docs/run-directory.md)::

    {"step", "epoch", "lr", "loss", "ce", "reg", "acc"}     loss = ce + lambda * reg,  acc in percent
    {"step", "epoch", "val_acc"}                            validation accuracy (percent), where a run logs it

    ce  = mean over the batch of -log softmax(s * <f_img, f_txt>)_y          (the classification loss)
    reg = 1 - mean_c cos(t_c, t0_c)                                          (the text-feature regulariser)

Rows are read tolerantly, one value at a time: a row contributes each metric of :data:`METRICS` it holds as a
finite number and nothing else (a validation row is not a loss row; a row without a step, or a value that is
null or not a number, contributes nothing). Over the runs (seeds) of a configuration, per metric and step:

    value_mean = (1/n) sum_r value_r,   value_std = sqrt(sum_r (value_r - value_mean)^2 / (n - 1))

with n (``runs``) the runs that logged that metric at that step (seeds of one configuration log the same steps).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import pandas as pd

from analysis.configs import over_runs
from analysis.schemas import TRAINING_CURVE_CONFIGS, TRAINING_CURVES, conform

METRICS = ("loss", "ce", "reg", "acc", "val_acc", "lr")  # what a metrics.jsonl row may hold, drawn or not


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def training_curves(records: Iterable[Mapping], checkpoint: str = "", configuration: str = "") -> pd.DataFrame:
    """The TRAINING_CURVES rows of one run's metrics.jsonl records: one row per (step, metric) it logged."""
    rows = []
    for record in records:
        step = _number(record.get("step"))
        if step is None:
            continue
        epoch = _number(record.get("epoch"))
        for metric in METRICS:
            value = _number(record.get(metric))
            if value is not None:
                rows.append(
                    {"checkpoint": checkpoint, "configuration": configuration, "step": int(step),
                     "epoch": None if epoch is None else int(epoch), "metric": metric, "value": value}
                )  # fmt: skip
    frame = pd.DataFrame(rows, columns=list(TRAINING_CURVES))
    frame["epoch"] = frame["epoch"].astype("Int64")
    order = {m: i for i, m in enumerate(METRICS)}
    frame = frame.sort_values(["step", "metric"], key=lambda c: c.map(order) if c.name == "metric" else c)
    return conform(frame, TRAINING_CURVES)


def training_curve_configs(curves: pd.DataFrame) -> pd.DataFrame:
    """The TRAINING_CURVE_CONFIGS table: per configuration, metric and step, the mean and sample std over the runs
    (TRAINING_CURVES rows of several runs; module docstring)."""
    if curves.empty:
        return pd.DataFrame(columns=list(TRAINING_CURVE_CONFIGS))
    frame = curves.assign(epoch=curves["epoch"].astype("float64"))  # NaN-able in groupby keys
    stats = over_runs(frame, ["configuration", "metric", "step", "epoch"], ["value"])
    stats["epoch"] = stats["epoch"].astype("Int64")
    configs = {c: i for i, c in enumerate(dict.fromkeys(curves["configuration"]))}
    order = {m: i for i, m in enumerate(METRICS)}
    stats = stats.sort_values(
        ["configuration", "metric", "step"],
        key=lambda c: c.map(configs) if c.name == "configuration" else c.map(order) if c.name == "metric" else c,
        kind="stable",
    )
    return conform(stats, TRAINING_CURVE_CONFIGS)
