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

Several runs (:mod:`analysis.configs`): :func:`configuration_change` takes each tensor's mean and
sample std over the runs (seeds) of a configuration; :func:`group_change` sums each run's change
over the tensors of a layer group G (level ``group``, e.g. "image LN weight") or of a module family
(level ``family``: tower + attention, FFN, LN, embedding, projection; :attr:`clipfit.layers.Layer.family`)
and divides by the group's size, so a 46k-value recipe and a full fine-tune share one scale:

    sq_change(G) = sum_{theta in G} ||theta - theta0||^2,    per_value(G) = sq_change(G) / sum_{theta in G} numel(theta)

then mean and std over the runs. :func:`family_depth` places a whole-model change in depth: per
tower, family and position (``pre`` before the blocks, block index, ``post`` after them), the same two
numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import pandas as pd
import torch

from analysis.configs import over_runs
from analysis.errors import AnalysisError
from analysis.schemas import LAYER, PARAM_CHANGE, PARAM_CONFIGS, PARAM_FAMILIES, PARAM_GROUPS, PARAM_STEPS, conform
from analysis.tables import layer_frame
from clipfit.layers import describe


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


def _runs(table: pd.DataFrame, configurations: Mapping[str, str], seeds: Mapping[str, object]) -> pd.DataFrame:
    """``table`` with ``configuration`` and ``seed`` of each row's checkpoint; every checkpoint must be mapped."""
    unknown = sorted(set(table["checkpoint"]) - set(configurations))
    if unknown:
        raise AnalysisError(f"no configuration for checkpoint(s) {unknown}")
    frame = table.copy()
    frame["configuration"] = frame["checkpoint"].map(configurations)
    frame["seed"] = frame["checkpoint"].map(lambda c: seeds.get(c))
    return frame


def _seed_list(frame: pd.DataFrame) -> dict[str, str]:
    """configuration -> its runs' seeds, e.g. "1,2,3" ("?" for a run without one)."""
    out = {}
    for config, part in frame.groupby("configuration", sort=False):
        per_run = part.drop_duplicates("checkpoint")["seed"]
        out[config] = ",".join("?" if v is None or v != v else f"{v}" for v in per_run)
    return out


def configuration_change(
    table: pd.DataFrame, configurations: Mapping[str, str], seeds: Mapping[str, object]
) -> pd.DataFrame:
    """The PARAM_CONFIGS table: per configuration and tensor, mean and sample std over its runs of
    sq_change, l2_change and rel_change (std NaN for one run).

    Args:
        table: PARAM_CHANGE rows of several checkpoints.
        configurations: checkpoint label -> configuration label (runs of one configuration share it).
        seeds: checkpoint label -> the run's seed (None when unknown).
    """
    frame = _runs(table, configurations, seeds)
    stats = over_runs(frame, ["configuration", *LAYER, "numel"], ["sq_change", "l2_change", "rel_change"])
    stats["seeds"] = stats["configuration"].map(_seed_list(frame))
    return conform(stats, PARAM_CONFIGS)


def _family_of(name: str) -> str:
    layer = describe(name)
    return f"{layer.tower} {layer.family}"


def group_change(table: pd.DataFrame, configurations: Mapping[str, str], seeds: Mapping[str, object]) -> pd.DataFrame:
    """The PARAM_GROUPS table: per configuration, level (``group`` / ``family``) and group, the summed squared
    change and the change per value (module docstring), mean and sample std over the configuration's runs."""
    frame = _runs(table, configurations, seeds)
    frame["family"] = frame["name"].map(_family_of)
    per_run = []
    for level, column in (("group", "group"), ("family", "family")):
        for (config, checkpoint, tower, group), part in frame.groupby(
            ["configuration", "checkpoint", "tower", column], sort=False
        ):
            numel = int(part["numel"].sum())
            sq = float(part["sq_change"].sum())
            order = int(part["order"].min())
            per_run.append(
                {"configuration": config, "checkpoint": checkpoint, "level": level, "tower": tower, "group": group,
                 "tensors": len(part), "numel": numel, "sq_change": sq, "per_value": sq / numel, "order": order}
            )  # fmt: skip
    runs = pd.DataFrame(per_run).sort_values(["level", "order"], kind="stable")
    # a group's size is a property of the model and recipe, the same in every run of a configuration
    stats = over_runs(
        runs, ["configuration", "level", "tower", "group", "tensors", "numel"], ["sq_change", "per_value"]
    )
    stats["seeds"] = stats["configuration"].map(_seed_list(frame))
    return conform(stats, PARAM_GROUPS)


def family_depth(table: pd.DataFrame) -> pd.DataFrame:
    """The PARAM_FAMILIES table: per checkpoint, tower, module family and position in depth (``pre``, block
    index, ``post``), the tensors there, their values, summed sq_change and sq_change per value."""
    rows = []
    for record in table.itertuples(index=False):
        layer = describe(record.name)
        rows.append(
            {"checkpoint": record.checkpoint, "tower": layer.tower, "family": layer.family, "stage": layer.stage,
             "block": layer.block, "numel": int(record.numel), "sq_change": float(record.sq_change)}
        )  # fmt: skip
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(PARAM_FAMILIES))
    frame["block"] = frame["block"].fillna(-1).astype(int)
    out = []
    for (checkpoint, tower), part in frame.groupby(["checkpoint", "tower"], sort=False):
        depth = int(part["block"].max()) + 1
        for (family, stage, block), cell in part.groupby(["family", "stage", "block"], sort=True):
            position = "pre" if stage == 0 else "post" if stage == 2 else str(block)
            order = -1 if stage == 0 else depth if stage == 2 else block
            numel, sq = int(cell["numel"].sum()), float(cell["sq_change"].sum())
            out.append(
                {"checkpoint": checkpoint, "tower": tower, "family": family, "stage": int(stage),
                 "block": block if stage == 1 else None, "position": position, "order": order,
                 "tensors": len(cell), "numel": numel, "sq_change": sq, "per_value": sq / numel if numel else math.nan}
            )  # fmt: skip
    result = pd.DataFrame(out).sort_values(["checkpoint", "tower", "order", "family"], kind="stable")
    result["block"] = result["block"].astype("Int64")
    return conform(result, PARAM_FAMILIES)
