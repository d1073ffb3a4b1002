"""``clipfit-analyze grad-sums``: squared gradients per tensor, during training and at fixed values.

From a run's ``layers.jsonl``: paper Fig. 4 left, each trained tensor's squared gradients summed over
every training step (at the weights of that step), and the per-step curves. With data: the screening,
grad_sq_sum(theta) = sum_b sum_i (dL_b / dtheta_i)^2 over N batches b of the ClipFit loss
L_b = CE(s * <f_img, f_txt>, y) + lambda * (1 - mean_c cos(t_c, t0_c)) (see :mod:`analysis.grad_sums`),
on the run's own training batches (or val/test images), at the pretrained (``--state init``) or
fine-tuned values, for the recipe's tensors or every bias and LayerNorm (which would the loss push?).
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
from analysis.grad_sums import (
    candidate_names,
    grad_sum_table,
    gradient_steps,
    measure_grad_sums,
    training_configs,
    training_grad_sums,
)
from analysis.outputs import OutputDir
from analysis.sources import Source, configurations, default_labels, load_source, parse_pretrained
from clipfit.evaluate import cap_samples
from clipfit.heads import ClipHead
from clipfit.models import build_model
from clipfit.objective import Objective
from clipfit.recipes import select
from clipfit.rundir import LAYERS_FILE, read_jsonl
from figures.grad_sums import (
    caption_grad_steps,
    caption_grad_sums,
    caption_grad_training,
    caption_grad_training_configs,
    draw_grad_steps,
    draw_grad_sums,
    draw_grad_training,
    draw_grad_training_configs,
)
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
    """The screening over N batches, plus the run's training-time figures (Fig. 4 left, per-step curves)."""
    if opts.state not in ("init", "final"):
        raise AnalysisError(f"--state is init or final, got {opts.state!r}")
    if opts.split not in ("train", "val", "test"):
        raise AnalysisError(f"--split is train, val or test, got {opts.split!r}")
    if opts.batches < 1:
        raise AnalysisError("--batches must be at least 1")
    dev = device(common.device)
    source = load_source(opts.checkpoint, opts.pretrained, opts.recipe or "clipfit") if opts.checkpoint else None
    layers = _layers_file(opts.layers, source) if opts.curves else None  # a bad --layers fails before the passes
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
            f"Squared-gradient screening {WHERE[state]}: which tensors the loss pushes",
            caption_grad_sums(table),
            [sig],
            summary,
        )
    ]
    if layers is not None:
        label = default_labels([source])[0] if source is not None else layers.parent.name
        steps = gradient_steps(read_jsonl(layers), label)
        numel = {label: {n: p.numel() for n, p in model.named_parameters()}}
        figures += _training_figures(steps, numel, out, [sig])
    return figures


def _layers_file(given: str | None, source: Source | None) -> Path | None:
    if given is not None:
        path = Path(given).expanduser()
        path = path / LAYERS_FILE if path.is_dir() else path
        if not path.is_file():
            raise AnalysisError(f"no {LAYERS_FILE} at {path}")
        try:
            with path.open(encoding="utf-8") as handle:
                for _ in handle:  # decodes every line, holding one at a time
                    pass
        except (OSError, UnicodeDecodeError) as exc:
            raise AnalysisError(f"--layers {path} is not a readable JSON-lines text file ({exc})") from None
        return path
    return source.layers_file if source is not None else None


def run_grad_steps(sources: list[Source], labels: list[str], common: Common) -> list[ReportFigure]:
    """Only the training-time figures of runs' layers.jsonl (Fig. 4 left and the per-step curves; the
    report's cheap part of grad-sums)."""
    logs = [(s, label) for s, label in zip(sources, labels, strict=True) if s.layers_file is not None]
    if not logs:
        return []
    steps = pd.concat([gradient_steps(read_jsonl(s.layers_file), label) for s, label in logs], ignore_index=True)
    numel = {label: {n: t.numel() for n, t in s.ckpt.final.items()} for s, label in logs}
    out = OutputDir(common.out, common.argv, "grad-sums")
    logged = [s for s, _ in logs]
    pooled = dict(zip([label for _, label in logs], configurations(logged), strict=True))
    seeds = {label: s.ckpt.meta.get("seed") for s, label in logs}
    return _training_figures(steps, numel, out, [s.signature for s in logged], pooled, seeds)


def _training_figures(
    steps: pd.DataFrame,
    numel,
    out: OutputDir,
    signatures: list[str],
    configurations: dict[str, str] | None = None,
    seeds: dict[str, object] | None = None,
) -> list[ReportFigure]:
    """Paper Fig. 4 left (squared gradients summed over training) and the per-step curves of GRAD_STEPS rows;
    with ``configurations`` (checkpoint -> configuration) holding seeds of one, Fig. 4 left over seeds."""
    if steps.empty:
        return []
    table = training_grad_sums(steps, numel)
    title = "Squared-gradient sums per layer over training (paper Fig. 4 left)"
    if configurations and len(set(configurations.values())) < len(configurations):
        configs = training_configs(table, configurations, seeds or {})
        tables = {"grad_sums_training": table, "grad_sums_training_configs": configs}
        draw, caption = (lambda: draw_grad_training_configs(configs)), caption_grad_training_configs(configs)
    else:
        tables, draw, caption = table, (lambda: draw_grad_training(table)), caption_grad_training(table)
    fig4 = write_figure(out, "grad_sums_training", tables, draw, title, caption, signatures)
    title = "Squared gradients during training"
    curves = write_figure(
        out, "grad_sums_steps", steps, lambda: draw_grad_steps(steps), title, caption_grad_steps(steps), signatures
    )
    return [fig4, curves]


def execute(opts: GradSumsOptions, common: Common) -> None:
    """Run, then print where the figures went."""
    announce(run_grad_sums(opts, common))
