"""``clipfit-analyze grad-sums``: squared-gradient sums per tensor over N batches (paper Fig. 4 left).

For every candidate tensor theta, grad_sq_sum(theta) = sum_b sum_i (dL_b / dtheta_i)^2 over N batches
b of the ClipFit loss L_b = CE(s * <f_img, f_txt>, y) + lambda * (1 - mean_c cos(t_c, t0_c)) (see
:mod:`analysis.grad_sums`), on the run's own training batches (or val/test images), at the
pretrained (``--state init``) or fine-tuned values. A run's ``layers.jsonl`` adds the per-step
curves logged during training.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.commands.bundle import announce, write_figure
from analysis.commands.common import (
    Common,
    DataOptions,
    checkpoint_values,
    data_config,
    device,
    eval_batches,
    prepare_data,
    signature,
    train_batches,
    trained_model,
)
from analysis.errors import AnalysisError
from analysis.grad_sums import candidate_names, grad_sum_table, gradient_steps, measure_grad_sums
from analysis.outputs import OutputDir
from analysis.sources import Source, default_labels, load_source, parse_pretrained
from clipfit.evaluate import cap_samples
from clipfit.heads import ClipHead
from clipfit.models import build_model
from clipfit.objective import Objective
from clipfit.recipes import select
from clipfit.rundir import LAYERS_FILE, read_jsonl
from figures.grad_sums import caption_grad_steps, caption_grad_sums, draw_grad_steps, draw_grad_sums
from figures.report import ReportFigure

# where the gradients were taken, as the figure title says it
WHERE = {
    "init": "at the pretrained values",
    "final": "at the fine-tuned values",
    "pretrained": "of the pretrained model",
}


@dataclass
class GradSumsOptions:
    """Which model, values and data ``grad-sums`` takes gradients of."""

    checkpoint: str | None = None  # a run (default: the pretrained model of --pretrained or the dataset)
    pretrained: str | None = None  # MODEL:SOURCE (model without a checkpoint, or Dassl reference)
    recipe: str | None = None  # recipe whose tensors are marked (default: the checkpoint's, else clipfit)
    state: str = "init"  # init: gradients at the pretrained values; final: at the fine-tuned ones
    data: DataOptions = field(default_factory=DataOptions)  # dataset and draw (default: the run's)
    split: str = "train"  # train (the few-shot draw, augmented as in training), val or test
    batches: int = 8  # number of batches
    batch_size: int | None = None  # images per batch (default: the run's, 32)
    reg_weight: float | None = None  # lambda (default: the run's / the paper's)
    all_candidates: bool = False  # every bias and LayerNorm tensor of both towers
    top: int = 25  # tensors shown in the ranked figure
    layers: str | None = None  # layers.jsonl (or its run directory) for the per-step curves
    curves: bool = True  # draw the per-step curves of the checkpoint's run (report draws them for all runs)


OPTIONS = GradSumsOptions


def run_grad_sums(opts: GradSumsOptions, common: Common) -> list[ReportFigure]:
    """Squared-gradient sums per tensor over N batches (Fig. 4 left), plus the run's per-step curves."""
    if opts.state not in ("init", "final"):
        raise AnalysisError(f"--state is init or final, got {opts.state!r}")
    if opts.split not in ("train", "val", "test"):
        raise AnalysisError(f"--split is train, val or test, got {opts.split!r}")
    if opts.batches < 1:
        raise AnalysisError("--batches must be at least 1")
    dev = device(common.device)
    source = load_source(opts.checkpoint, opts.pretrained, opts.recipe or "clipfit") if opts.checkpoint else None
    if source is None:
        if opts.state == "final":
            raise AnalysisError("--state final needs a checkpoint (CKPT) whose fine-tuned values to use")
        model_spec = parse_pretrained(opts.pretrained) if opts.pretrained else None
        cfg = data_config(None, opts.data, model_spec)
        bundle = build_model(cfg.model.name, cfg.model.pretrained, dev)
        recipe = opts.recipe or "clipfit"
        sig = signature(bundle.name, bundle.pretrained, recipe, cfg.data.dataset, cfg.seed, bundle.activation)
        state = "pretrained"
    else:
        cfg = data_config(source, opts.data)
        bundle = trained_model(source, opts.pretrained, dev)
        recipe = opts.recipe or source.ckpt.meta.get("recipe", "clipfit")
        sig = source.signature
        state = opts.state
    model = bundle.model
    data = prepare_data(cfg)
    batch_size = opts.batch_size or cfg.optim.batch_size
    reg_weight = cfg.optim.reg_weight if opts.reg_weight is None else opts.reg_weight
    names = candidate_names(model, recipe, opts.all_candidates)
    recipe_names = select(model, recipe)
    # The training objective through the recipe's head (CoOp's context, CLIP-Adapter's adapter), with t0
    # taken at the pretrained values and the gradients at the values --state names.
    head = bundle.head or ClipHead()
    classnames = list(data.train_subset.classnames)
    at_init = checkpoint_values(model, source.ckpt, "init", model_name=bundle.name) if source else nullcontext()
    with at_init:
        objective = Objective.build(model, head, bundle.tokenizer, data.template, classnames, names, reg_weight, dev)
    if opts.split == "train":
        batches = train_batches(data, bundle.preprocess, batch_size, opts.batches, cfg.seed, cfg.data.train_cache)
    else:
        pool = data.val if opts.split == "val" else data.train_subset.relabel(data.dataset.test)
        batches = eval_batches(cap_samples(pool, batch_size * opts.batches), data, bundle.preprocess, batch_size)
    at_state = checkpoint_values(model, source.ckpt, "init", bundle.name) if state == "init" else nullcontext()
    with at_state:
        sums, used = measure_grad_sums(objective, names, batches, dev, total=opts.batches)
    numel = {n: p.numel() for n, p in model.named_parameters()}
    table = grad_sum_table(sums, numel, recipe_names, used)

    out = OutputDir(common.out, common.argv, "grad-sums")
    summary = {
        "state": state,
        "split": opts.split,
        "batches": used,
        "batch_size": batch_size,
        "reg_weight": reg_weight,
        "recipe": recipe,
        "all_candidates": opts.all_candidates,
        "top": table.head(10)[["rank", "name", "group", "grad_sq_sum", "in_recipe"]].to_dict("records"),
    }
    figures = [
        write_figure(
            out,
            "grad_sums",
            table,
            lambda: draw_grad_sums(table, opts.top),
            f"Squared-gradient sums per tensor {WHERE[state]} (paper Fig. 4 left)",
            caption_grad_sums(table),
            [sig],
            summary,
        )
    ]
    layers = _layers_file(opts.layers, source) if opts.curves else None
    if layers is not None:
        label = default_labels([source])[0] if source is not None else layers.parent.name
        steps = gradient_steps(read_jsonl(layers), label)
        if not steps.empty:
            figures.append(_grad_steps_figure(steps, out, [sig]))
    return figures


def _layers_file(given: str | None, source: Source | None) -> Path | None:
    if given is not None:
        path = Path(given).expanduser()
        path = path / LAYERS_FILE if path.is_dir() else path
        if not path.is_file():
            raise AnalysisError(f"no {LAYERS_FILE} at {path}")
        return path
    return source.layers_file if source is not None else None


def run_grad_steps(sources: list[Source], labels: list[str], common: Common) -> list[ReportFigure]:
    """Only the per-step gradient curves of runs' layers.jsonl (the report's cheap part of grad-sums)."""
    logs = [(s, label) for s, label in zip(sources, labels, strict=True) if s.layers_file is not None]
    if not logs:
        return []
    steps = pd.concat([gradient_steps(read_jsonl(s.layers_file), label) for s, label in logs], ignore_index=True)
    if steps.empty:
        return []
    out = OutputDir(common.out, common.argv, "grad-sums")
    return [_grad_steps_figure(steps, out, [s.signature for s, _ in logs])]


def _grad_steps_figure(steps: pd.DataFrame, out: OutputDir, signatures: list[str]) -> ReportFigure:
    """The per-step squared-gradient curves of GRAD_STEPS rows, saved with their data and sidecar."""
    title = "Squared gradients during training"
    return write_figure(
        out, "grad_sums_steps", steps, lambda: draw_grad_steps(steps), title, caption_grad_steps(steps), signatures
    )


def execute(opts: GradSumsOptions, common: Common) -> None:
    """Run, then print where the figures went."""
    announce(run_grad_sums(opts, common))
