"""Squared-gradient sums per layer: during training (paper Fig. 4 left), and a screening at fixed values.

Paper Fig. 4 left is the training-time quantity the released instrumentation summed: for every trained
tensor theta and every training step t (at the weights of that step),

    grad_sq_sum(theta) = sum_t sum_i (dL_t / dtheta_i)^2

which the trainer accumulates on the device and logs as ``grad_sq_cum`` in layers.jsonl;
:func:`training_grad_sums` tabulates its value after the last step.

The screening (``clipfit-analyze grad-sums``, not a figure of the paper) takes the same sum over N
batches b at fixed values (the pretrained ones by default) of the ClipFit training loss
L_b = CE(s * <f_img, f_txt>, y) + lambda * (1 - mean_c cos(t_c, t0_c)):

    grad_sq_sum(theta)       = sum_b sum_i (dL_b / dtheta_i)^2
    grad_sq_per_value(theta) = grad_sq_sum(theta) / numel(theta)

Candidates are the recipe's tensors, or with ``all_candidates`` every bias and every LayerNorm
tensor of both towers (selected structurally by :mod:`clipfit.recipes`); the table is ranked by
grad_sq_sum, largest first (rank 1). Tensors with large gradient sums are the ones the loss
"wants" to move, which is why the paper picked the text FFN-out biases and the image LayerNorms.

Over the runs (seeds) of a configuration, :func:`training_configs` gives each tensor's mean and sample std
of grad_sq_sum and grad_sq_per_value.

The per-step curves of the trained tensors come from the run's ``layers.jsonl`` (``grad_sq`` of
the step and ``grad_sq_cum`` since the start), tabulated by :func:`gradient_steps`.

:func:`measure_grad_sums` runs the model; everything else here is a pure function of numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from analysis.configs import over_runs
from analysis.errors import AnalysisError
from analysis.schemas import GRAD_STEPS, GRAD_SUMS, GRAD_TRAINING, GRAD_TRAINING_CONFIGS, LAYER, conform
from analysis.tables import layer_frame
from clipfit import towers
from clipfit.objective import Objective
from clipfit.recipes import select


def candidate_names(model: nn.Module, recipe: str, all_candidates: bool) -> list[str]:
    """The recipe's tensors, or (``all_candidates``) every bias and LayerNorm tensor of both towers,
    in model order."""
    chosen = set(select(model, recipe))
    if all_candidates:
        for rule in (towers.image_biases, towers.text_biases, towers.image_layernorms, towers.text_layernorms):
            chosen.update(rule(model))
    return [n for n, _ in model.named_parameters() if n in chosen]


def grad_sum_table(
    sums: Mapping[str, float], numel: Mapping[str, int], recipe_names: Iterable[str], batches: int
) -> pd.DataFrame:
    """The GRAD_SUMS table: one row per tensor of ``sums``, ranked by grad_sq_sum (largest first)."""
    if not sums:
        raise AnalysisError("no gradient sums to tabulate")
    recipe_names = set(recipe_names)
    frame = layer_frame(sums)
    frame["numel"] = [int(numel[n]) for n in frame["name"]]
    frame["in_recipe"] = [n in recipe_names for n in frame["name"]]
    frame["batches"] = batches
    frame["grad_sq_sum"] = [float(sums[n]) for n in frame["name"]]
    frame["grad_sq_per_value"] = frame["grad_sq_sum"] / frame["numel"]
    frame = frame.sort_values(["grad_sq_sum", "order"], ascending=[False, True], kind="stable")
    frame["rank"] = range(1, len(frame) + 1)
    return conform(frame, GRAD_SUMS)


def training_grad_sums(steps: pd.DataFrame, numel: Mapping[str, Mapping[str, int]]) -> pd.DataFrame:
    """The GRAD_TRAINING table (paper Fig. 4 left) from GRAD_STEPS rows: each tensor's ``grad_sq_cum`` at its
    last logged step, the sum of its squared gradients over every step of training.

    Args:
        steps: GRAD_STEPS rows of one or more runs (column ``checkpoint`` tells them apart).
        numel: checkpoint label -> tensor name -> number of values.
    """
    if steps.empty:
        return pd.DataFrame(columns=list(GRAD_TRAINING))
    last = steps.sort_values("step", kind="stable").groupby(["checkpoint", "name"], sort=False).tail(1).copy()
    last["steps"] = last["step"].astype(int)
    last["grad_sq_sum"] = last["grad_sq_cum"].astype(float)
    last["numel"] = [int(numel[c][n]) for c, n in zip(last["checkpoint"], last["name"], strict=True)]
    last["grad_sq_per_value"] = last["grad_sq_sum"] / last["numel"]
    return conform(last.sort_values(["checkpoint", "order"], kind="stable"), GRAD_TRAINING)


def gradient_steps(records: Iterable[Mapping], checkpoint: str = "") -> pd.DataFrame:
    """The GRAD_STEPS table from ``layers.jsonl`` records (step, epoch, name, grad_sq, grad_sq_cum)."""
    frame = pd.DataFrame(list(records))
    if frame.empty:
        return pd.DataFrame(columns=list(GRAD_STEPS))
    needed = {"step", "epoch", "name", "grad_sq", "grad_sq_cum"}
    if not needed <= set(frame.columns):
        raise AnalysisError(f"layers.jsonl records lack {sorted(needed - set(frame.columns))}")
    layers = layer_frame(frame["name"].unique())
    frame = frame[["step", "epoch", "name", "grad_sq", "grad_sq_cum"]].merge(layers, on="name", how="left")
    frame.insert(0, "checkpoint", checkpoint)
    return conform(frame.sort_values(["step", "order"], kind="stable"), GRAD_STEPS)


def measure_grad_sums(
    objective: Objective,
    names: Sequence[str],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    total: int | None = None,
) -> tuple[dict[str, float], int]:
    """Sum of squared gradients of the training objective for each tensor in ``names`` over ``batches``.

    Only ``names`` require gradients during the pass (frozen weights get none); the previous
    ``requires_grad`` flags are restored afterwards. The model runs in training mode, as in training.

    Args:
        objective: the run's objective (its head, class inputs, t0 and lambda), built with
            :meth:`clipfit.objective.Objective.build` at the pretrained values with ``names`` as the
            trained tensors (so the features of each tower that holds one carry a graph).
        names: the tensors to measure.
        batches: (images, labels) with labels indexing the objective's label space.

    Returns:
        (name -> grad_sq_sum, number of batches used).
    """
    model = objective.model
    params = dict(model.named_parameters())
    unknown = [n for n in names if n not in params]
    if unknown:
        raise AnalysisError(f"the model has no parameter {unknown[0]}")
    flags = {n: p.requires_grad for n, p in params.items()}
    was_training = model.training
    sums = torch.zeros(len(names), dtype=torch.float64, device=device)
    chosen = [params[n] for n in names]
    used = 0
    wanted = set(names)
    try:
        for name, param in params.items():
            param.requires_grad_(name in wanted)
        towers.train_mode(model)
        for images, labels in tqdm(batches, desc="gradients", total=total, disable=None, leave=False):
            parts = objective.batch_loss(images.to(device), labels.to(device))
            grads = torch.autograd.grad(parts.loss, chosen, allow_unused=True)
            sums += torch.stack(
                [
                    g.double().pow(2).sum() if g is not None else torch.zeros((), device=device, dtype=torch.float64)
                    for g in grads
                ]
            )
            used += 1
    finally:
        for name, param in params.items():
            param.requires_grad_(flags[name])
        model.train(was_training)
    if used == 0:
        raise AnalysisError("no batches to compute gradients on (an empty split?)")
    return dict(zip(names, sums.tolist(), strict=True)), used


def training_configs(
    table: pd.DataFrame, configurations: Mapping[str, str], seeds: Mapping[str, object]
) -> pd.DataFrame:
    """The GRAD_TRAINING_CONFIGS table: GRAD_TRAINING rows averaged over the runs of each configuration.

    Args:
        configurations: checkpoint label -> configuration label; seeds: checkpoint label -> seed.
    """
    frame = table.assign(configuration=table["checkpoint"].map(configurations))
    order = {c: i for i, c in enumerate(dict.fromkeys(configurations.values()))}  # the runs' order, not the names'
    frame = frame.sort_values("configuration", key=lambda c: c.map(order), kind="stable")
    stats = over_runs(frame, ["configuration", *LAYER, "numel", "steps"], ["grad_sq_sum", "grad_sq_per_value"])
    runs = frame.drop_duplicates("checkpoint")
    listed = {
        c: ",".join("?" if seeds.get(k) is None else f"{seeds.get(k)}" for k in part["checkpoint"])
        for c, part in runs.groupby("configuration", sort=False)
    }
    stats["seeds"] = stats["configuration"].map(listed)
    return conform(stats, GRAD_TRAINING_CONFIGS)
