"""The sub-commands of clipfit-analyze: load, measure, tabulate, draw, write.

Each ``run_*`` function takes typed options (the CLI maps argparse onto them once), writes its
tables, figures and sidecars into an output folder, and returns the figures it made (with their
captions) so that ``report`` can reuse every analysis unchanged. Heavy imports (matplotlib,
scikit-learn, the figure modules) happen inside the functions that need them.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from analysis.errors import AnalysisError
from analysis.outputs import OutputDir
from analysis.sources import Source, default_labels, load_source, parse_pretrained
from analysis.tables import read_jsonl
from clipfit.checkpoint import CheckpointError, apply_checkpoint
from clipfit.config import RunConfig, resolve
from clipfit.evaluate import cap_samples
from clipfit.models import ModelBundle, build_model
from clipfit.run import RunData, build_trained_model, prepare_data, signature
from clipfit.runtime import resolve_device

if TYPE_CHECKING:
    from figures.report import ReportFigure

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- options


@dataclass
class DataOptions:
    """Which data a pass reads; None keeps the run's own setting."""

    dataset: str | None = None  # registered dataset name
    data_root: str | None = None  # folder holding the dataset folders
    setting: str | None = None  # base2new or fewshot (decides the label spaces)
    shots: int | None = None  # few-shot draw (grad-sums on the train split)
    seed: int | None = None  # few-shot draw and batch order
    template: str | None = None  # prompt template


@dataclass
class Common:
    """What every sub-command shares."""

    out: Path  # output folder
    argv: list[str]  # the command line after the program name, for the sidecars
    device: str = "auto"  # auto, cpu, cuda, cuda:1


@dataclass
class ParamChangeOptions:
    checkpoints: list[str]  # run directories, checkpoint files or original CLIPFit checkpoints
    labels: list[str] | None = None  # one label per checkpoint (default: recipe, λ, or differing path parts)
    pretrained: str | None = None  # MODEL:SOURCE, reference values of original CLIPFit checkpoints
    recipe: str = "clipfit"  # tensors an original CLIPFit run trained
    measure: str = "sq_change"  # plotted measure: sq_change, l2_change or rel_change


@dataclass
class GradSumsOptions:
    checkpoint: str | None = None  # a run (default: the pretrained model of --pretrained or the dataset)
    pretrained: str | None = None  # MODEL:SOURCE (model without a checkpoint, or Dassl reference)
    recipe: str | None = None  # recipe whose tensors are marked (default: the checkpoint's, else clipfit)
    state: str = "init"  # init: gradients at the pretrained values; final: at the fine-tuned ones
    data: DataOptions = field(default_factory=DataOptions)
    split: str = "train"  # train (the few-shot draw, augmented as in training), val or test
    batches: int = 8  # number of batches
    batch_size: int | None = None  # images per batch (default: the run's, 32)
    reg_weight: float | None = None  # lambda (default: the run's / the paper's)
    all_candidates: bool = False  # every bias and LayerNorm tensor of both towers
    top: int = 25  # tensors shown in the ranked figure
    layers: str | None = None  # layers.jsonl (or its run directory) for the per-step curves
    curves: bool = True  # draw the per-step curves of the checkpoint's run (report draws them for all runs)


@dataclass
class TsneOptions:
    checkpoint: str
    pretrained: str | None = None
    recipe: str = "clipfit"
    data: DataOptions = field(default_factory=DataOptions)
    subset: str | None = None  # base, new or all (default: the label space the run trained on)
    max_classes: int = 10  # classes shown (the first of the subset), for readability
    max_images: int = 400  # test images at most, evenly spaced over the selected classes
    perplexity: float = 30.0
    seed: int = 0  # t-SNE random_state
    knn: int = 5  # k of the k-NN accuracy
    batch_size: int = 256


@dataclass
class RepChangeOptions:
    checkpoint: str
    pretrained: str | None = None
    recipe: str = "clipfit"
    data: DataOptions = field(default_factory=DataOptions)
    subset: str | None = None  # label space of the test images (default: the run's training one)
    max_images: int = 512  # test images at most for the image tower
    batch_size: int = 256


@dataclass
class ResultsOptions:
    root: str  # a folder of runs (searched recursively for results.json)
    published: bool = False  # append the published numbers of PAPER.md section 8
    readme: str | None = None  # a Markdown file whose results block is rewritten (see write_readme_block)
    readme_figures: str = "docs/figures"  # where the figures the block shows are copied (relative to cwd)


@dataclass
class ReportOptions:
    run_dirs: list[str]
    title: str | None = None
    pretrained: str | None = None  # MODEL:SOURCE for original CLIPFit checkpoints
    data_passes: bool = True  # grad-sums, tsne and rep-change on the first run (they read images)
    max_images: int = 400  # cap for tsne and rep-change
    max_classes: int = 10  # classes in the t-SNE
    batches: int = 4  # grad-sums batches
    published: bool = False


# ----------------------------------------------------------------------------- shared helpers


def _device(name: str) -> torch.device:
    try:
        return resolve_device(name)
    except RuntimeError as exc:
        raise AnalysisError(str(exc)) from None


def _saved(fig, out: OutputDir, stem: str):
    from figures.style import save_figure

    return save_figure(fig, out.path, stem)


def announce(figures: list[ReportFigure]) -> None:
    """Print where each figure and its data went."""
    for fig in figures:
        print(f"{fig.title}: {fig.png} (+ {', '.join(p.name for p in [fig.svg, *fig.data])})")


def _data_config(source: Source | None, data: DataOptions, model: tuple[str, str] | None = None) -> RunConfig:
    """The run's settings with the given overrides (a Dassl checkpoint needs --dataset)."""
    if source is not None and source.cfg is not None:
        cfg = RunConfig.from_dict(source.cfg.to_dict())
    else:
        cfg = RunConfig()
        if source is not None:
            cfg.model.name, cfg.model.pretrained = source.ckpt.meta["model"], source.ckpt.meta["pretrained"]
            cfg.recipe = source.ckpt.meta.get("recipe", cfg.recipe)
            if data.dataset is None:
                raise AnalysisError(
                    f"{source.path} ({source.kind}) does not record its dataset; pass --dataset (and --data-root)"
                )
        elif model is not None:
            cfg.model.name, cfg.model.pretrained = model
    for key in ("dataset", "data_root", "setting", "shots", "template"):
        if getattr(data, key) is not None:
            setattr(cfg.data, key, getattr(data, key))
    if data.seed is not None:
        cfg.seed = data.seed
    return resolve(cfg)


def _trained_model(source: Source, pretrained: str | None, device: torch.device) -> ModelBundle:
    """The source's model with its fine-tuned values; ``pretrained`` may re-point a clipfit run's weights."""
    model = weights = None
    if pretrained is not None and source.cfg is not None:
        model, weights = parse_pretrained(pretrained)
        recorded = source.ckpt.meta.get("model")
        if recorded and model != recorded:
            raise CheckpointError(
                f"{source.path} was trained on {recorded} (pretrained {source.ckpt.meta.get('pretrained')}), but "
                f"--pretrained names {model}; drop --pretrained (the run records its model) or name its architecture"
            )
    return build_trained_model(source.ckpt, device, "final", model, weights)


def _subset(data: RunData, name: str | None):
    name = name or data.train_subset.name
    if name not in data.subsets:
        raise AnalysisError(f"no label space '{name}' in a {', '.join(data.subsets)} run; choose one of those")
    return data.subsets[name]


def _test_samples(data: RunData, subset_name: str | None, max_classes: int | None, max_images: int | None):
    """Test images of a label space (its first ``max_classes`` classes), relabelled, evenly capped."""
    subset = _subset(data, subset_name)
    labels = subset.labels[: max_classes or None]
    wanted = set(labels)
    samples = subset.relabel([s for s in data.dataset.test if s.label in wanted])
    if not samples:
        raise AnalysisError(f"no test images in label space '{subset.name}' of {data.dataset.name}")
    return cap_samples(samples, max_images), list(subset.classnames[: len(labels)]), subset.name


# ----------------------------------------------------------------------------- param-change


def run_param_change(
    opts: ParamChangeOptions, common: Common, sources: list[Source] | None = None
) -> list[ReportFigure]:
    """Per-layer change of each checkpoint (Fig. 3; Fig. 4 right for a λ = 8 / λ = 0 pair).

    ``sources`` may pass the checkpoints already loaded (the report does), instead of ``opts.checkpoints``.
    """
    from analysis.param_change import change_over_steps, combine, group_summary, param_change
    from figures.param_change import caption_param_change, caption_param_steps, draw_param_change, draw_param_steps
    from figures.report import ReportFigure

    if opts.measure not in ("sq_change", "l2_change", "rel_change"):
        raise AnalysisError(f"unknown measure '{opts.measure}'; choose sq_change, l2_change or rel_change")
    sources = sources or [load_source(p, opts.pretrained, opts.recipe) for p in opts.checkpoints]
    labels = opts.labels or default_labels(sources)
    if len(labels) != len(sources):
        raise AnalysisError(f"{len(labels)} labels for {len(sources)} checkpoints; give one label per checkpoint")
    table = combine(param_change(s.ckpt.init, s.ckpt.final, label) for s, label in zip(sources, labels, strict=True))
    out = OutputDir(common.out, common.argv, "param-change")
    signatures = [s.signature for s in sources]
    csv = out.table(table, "param_change")
    saved = _saved(draw_param_change(table, opts.measure), out, "param_change")
    summary = {
        "checkpoints": {label: str(s.path) for s, label in zip(sources, labels, strict=True)},
        "groups": group_summary(table).to_dict("records"),
        "notes": [n for s in sources for n in s.notes],
    }
    side = out.sidecar("param_change", signatures, [csv, saved.png, saved.svg], summary)
    title = "Per-layer parameter change (paper Fig. 3)"
    if len({s.reg_weight for s in sources}) > 1:
        title = "Per-layer parameter change with different regulariser weights (paper Fig. 4 right)"
    elif len(sources) > 1:
        title += ", checkpoints side by side"
    figures = [
        ReportFigure(
            "param_change",
            title,
            caption_param_change(table, opts.measure),
            saved.png,
            saved.svg,
            [csv, side],
        )
    ]
    logs = [(s, label) for s, label in zip(sources, labels, strict=True) if s.layers_file is not None]
    if logs:
        steps = pd.concat([change_over_steps(read_jsonl(s.layers_file), label) for s, label in logs], ignore_index=True)
        if not steps.empty:
            csv = out.table(steps, "param_change_steps")
            saved = _saved(draw_param_steps(steps), out, "param_change_steps")
            side = out.sidecar("param_change_steps", [s.signature for s, _ in logs], [csv, saved.png, saved.svg])
            figures.append(
                ReportFigure(
                    "param_change_steps",
                    "Parameter change during training",
                    caption_param_steps(steps),
                    saved.png,
                    saved.svg,
                    [csv, side],
                )
            )
    return figures


# ----------------------------------------------------------------------------- grad-sums


def _train_batches(data: RunData, spec, batch_size: int, batches: int, seed: int) -> Iterator[tuple]:
    """The first ``batches`` training batches of the run, augmented exactly as training draws them."""
    from clipfit.data.loaders import AugmentedImages, EpochBatches, decode_images

    sampler = EpochBatches(len(data.train), batch_size, seed)
    plan: list[list[tuple[int, int]]] = []
    epoch = 0
    while len(plan) < batches and len(data.train) > 0:
        sampler.set_epoch(epoch)
        plan.extend(sampler.global_batches())
        epoch += 1
    plan = plan[:batches]
    needed = sorted({index for batch in plan for index, _ in batch})
    position = {index: k for k, index in enumerate(needed)}
    images = decode_images([data.train[i] for i in needed], data.dataset.reader, spec)
    dataset = AugmentedImages(images, [data.train[i].label for i in needed], spec, data.dataset.train_crop_scale)
    for batch in plan:
        items = [dataset[(position[index], seed_)] for index, seed_ in batch]
        yield torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def _eval_batches(samples, data: RunData, spec, batch_size: int) -> Iterator[tuple]:
    from clipfit.data.loaders import eval_loader

    yield from eval_loader(samples, data.dataset.reader, spec, batch_size, 0)


def run_grad_sums(opts: GradSumsOptions, common: Common) -> list[ReportFigure]:
    """Squared-gradient sums per tensor over N batches (Fig. 4 left), plus the run's per-step curves."""
    from analysis.grad_sums import candidate_names, grad_sum_table, gradient_steps, measure_grad_sums
    from clipfit.prompts import class_tokens
    from clipfit.recipes import select
    from clipfit.text import encode_text
    from figures.grad_sums import caption_grad_sums, draw_grad_sums
    from figures.report import ReportFigure

    if opts.state not in ("init", "final"):
        raise AnalysisError(f"--state is init or final, got {opts.state!r}")
    if opts.split not in ("train", "val", "test"):
        raise AnalysisError(f"--split is train, val or test, got {opts.split!r}")
    if opts.batches < 1:
        raise AnalysisError("--batches must be at least 1")
    device = _device(common.device)
    source = load_source(opts.checkpoint, opts.pretrained, opts.recipe or "clipfit") if opts.checkpoint else None
    if source is None:
        if opts.state == "final":
            raise AnalysisError("--state final needs a checkpoint (CKPT) whose fine-tuned values to use")
        model_spec = parse_pretrained(opts.pretrained) if opts.pretrained else None
        cfg = _data_config(None, opts.data, model_spec)
        bundle = build_model(cfg.model.name, cfg.model.pretrained, device)
        recipe = opts.recipe or "clipfit"
        sig = signature(bundle.name, bundle.pretrained, recipe, cfg.data.dataset, cfg.seed)
        state = "pretrained"
    else:
        cfg = _data_config(source, opts.data)
        bundle = _trained_model(source, opts.pretrained, device)
        recipe = opts.recipe or source.ckpt.meta.get("recipe", "clipfit")
        sig = source.signature
        state = opts.state
    model = bundle.model
    data = prepare_data(cfg)
    batch_size = opts.batch_size or cfg.optim.batch_size
    reg_weight = cfg.optim.reg_weight if opts.reg_weight is None else opts.reg_weight
    classnames = list(data.train_subset.classnames)
    tokens = class_tokens(bundle.tokenizer, model, data.template, classnames).to(device)
    head = bundle.head if source is not None else None  # CoOp's context, CLIP-Adapter's adapter: as trained
    class_inputs = head.class_inputs(bundle.tokenizer, model, data.template, classnames) if head else tokens
    if source is not None:
        apply_checkpoint(model, source.ckpt, "init", model_name=bundle.name)
    with torch.no_grad():
        model.eval()
        t0 = encode_text(model, tokens, normalize=True).float()
    if source is not None and opts.state == "final":
        apply_checkpoint(model, source.ckpt, "final", model_name=bundle.name)
    names = candidate_names(model, recipe, opts.all_candidates)
    recipe_names = select(model, recipe)
    if opts.split == "train":
        batches = _train_batches(data, bundle.preprocess, batch_size, opts.batches, cfg.seed)
    else:
        pool = data.val if opts.split == "val" else data.train_subset.relabel(data.dataset.test)
        batches = _eval_batches(cap_samples(pool, batch_size * opts.batches), data, bundle.preprocess, batch_size)
    sums, used = measure_grad_sums(
        model, names, batches, class_inputs, t0, reg_weight, device, total=opts.batches, head=head
    )
    numel = {n: p.numel() for n, p in model.named_parameters()}
    table = grad_sum_table(sums, numel, recipe_names, used)

    out = OutputDir(common.out, common.argv, "grad-sums")
    csv = out.table(table, "grad_sums")
    saved = _saved(draw_grad_sums(table, opts.top), out, "grad_sums")
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
    side = out.sidecar("grad_sums", [sig], [csv, saved.png, saved.svg], summary)
    where = {
        "init": "at the pretrained values",
        "final": "at the fine-tuned values",
        "pretrained": "of the pretrained model",
    }
    figures = [
        ReportFigure(
            "grad_sums",
            f"Squared-gradient sums per tensor {where[state]} (paper Fig. 4 left)",
            caption_grad_sums(table),
            saved.png,
            saved.svg,
            [csv, side],
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
        path = path / "layers.jsonl" if path.is_dir() else path
        if not path.is_file():
            raise AnalysisError(f"no layers.jsonl at {path}")
        return path
    return source.layers_file if source is not None else None


def run_grad_steps(sources: list[Source], labels: list[str], common: Common) -> list[ReportFigure]:
    """Only the per-step gradient curves of runs' layers.jsonl (the report's cheap part of grad-sums)."""
    from analysis.grad_sums import gradient_steps

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
    from figures.grad_sums import caption_grad_steps, draw_grad_steps
    from figures.report import ReportFigure

    csv = out.table(steps, "grad_sums_steps")
    saved = _saved(draw_grad_steps(steps), out, "grad_sums_steps")
    side = out.sidecar("grad_sums_steps", signatures, [csv, saved.png, saved.svg])
    title = "Squared gradients during training"
    return ReportFigure("grad_sums_steps", title, caption_grad_steps(steps), saved.png, saved.svg, [csv, side])


# ----------------------------------------------------------------------------- tsne


def run_tsne(opts: TsneOptions, common: Common) -> list[ReportFigure]:
    """t-SNE of zero-shot and fine-tuned image features of the same test images (Fig. 5)."""
    from analysis.features import image_states
    from analysis.tsne import tsne_tables
    from figures.report import ReportFigure
    from figures.tsne import caption_tsne, draw_tsne

    device = _device(common.device)
    source = load_source(opts.checkpoint, opts.pretrained, opts.recipe)
    cfg = _data_config(source, opts.data)
    data = prepare_data(cfg)
    samples, classnames, subset = _test_samples(data, opts.subset, opts.max_classes, opts.max_images)
    bundle = _trained_model(source, opts.pretrained, device)
    args = (samples, data.dataset.reader, bundle.preprocess, device, opts.batch_size, False)
    with_head = functools.partial(bundle.head.encode_images, bundle.model)  # e.g. CLIP-Adapter's adapter
    tuned, labels = image_states(bundle.model, *args, desc="features (fine-tuned)", encode=with_head)
    apply_checkpoint(bundle.model, source.ckpt, "init", model_name=bundle.name)
    zero, _ = image_states(bundle.model, *args, desc="features (zero-shot)")
    features = {"zero-shot": zero["output"].numpy(), "fine-tuned": tuned["output"].numpy()}
    points, metrics = tsne_tables(features, labels.numpy(), classnames, opts.perplexity, opts.seed, opts.knn)

    out = OutputDir(common.out, common.argv, "tsne")
    csv = out.table(points, "tsne")
    csv_metrics = out.table(metrics, "tsne_metrics")
    saved = _saved(draw_tsne(points, metrics), out, "tsne")
    summary = {
        "dataset": cfg.data.dataset,
        "subset": subset,
        "classes": classnames,
        "images": len(samples),
        "perplexity": opts.perplexity,
        "seed": opts.seed,
        "metrics": metrics.to_dict("records"),
    }
    side = out.sidecar("tsne", [source.signature], [csv, csv_metrics, saved.png, saved.svg], summary)
    title = f"t-SNE of image features, zero-shot vs fine-tuned (paper Fig. 5; {cfg.data.dataset} {subset} test images)"
    return [ReportFigure("tsne", title, caption_tsne(metrics), saved.png, saved.svg, [csv, csv_metrics, side])]


# ----------------------------------------------------------------------------- rep-change


def run_rep_change(opts: RepChangeOptions, common: Common) -> list[ReportFigure]:
    """Linear CKA between pretrained and fine-tuned hidden states at every block of both towers."""
    from analysis.features import image_states, text_states
    from analysis.rep_change import rep_change
    from clipfit.prompts import class_tokens
    from figures.rep_change import caption_rep_change, draw_rep_change
    from figures.report import ReportFigure

    device = _device(common.device)
    source = load_source(opts.checkpoint, opts.pretrained, opts.recipe)
    cfg = _data_config(source, opts.data)
    data = prepare_data(cfg)
    samples, _, subset = _test_samples(data, opts.subset, None, opts.max_images)
    bundle = _trained_model(source, opts.pretrained, device)
    tokens = class_tokens(bundle.tokenizer, bundle.model, data.template, data.dataset.classnames)

    def states(desc: str, encode=None) -> dict[str, dict[str, torch.Tensor]]:
        image, _ = image_states(
            bundle.model, samples, data.dataset.reader, bundle.preprocess, device, opts.batch_size, True, desc, encode
        )
        return {"image": image, "text": text_states(bundle.model, tokens)}

    # the fine-tuned image output goes through the recipe's head (CLIP-Adapter's adapter); the text
    # tower is measured on the template prompts, which a CoOp context does not change
    after = states("hidden states (fine-tuned)", functools.partial(bundle.head.encode_images, bundle.model))
    apply_checkpoint(bundle.model, source.ckpt, "init", model_name=bundle.name)
    before = states("hidden states (pretrained)")
    table = rep_change(before, after)

    out = OutputDir(common.out, common.argv, "rep-change")
    csv = out.table(table, "rep_change")
    saved = _saved(draw_rep_change(table), out, "rep_change")
    summary = {
        "dataset": cfg.data.dataset,
        "image_inputs": f"{len(samples)} test images of label space '{subset}'",
        "text_inputs": f"{len(tokens)} class prompts ({data.template!r}, all classes)",
    }
    side = out.sidecar("rep_change", [source.signature], [csv, saved.png, saved.svg], summary)
    return [
        ReportFigure(
            "rep_change",
            "Representation change per block (linear CKA)",
            caption_rep_change(table),
            saved.png,
            saved.svg,
            [csv, side],
        )
    ]


# ----------------------------------------------------------------------------- results


@dataclass
class ResultsOutput:
    figures: list  # ReportFigure of each table kind present
    tables: list  # ReportTable of each table kind present
    runs: pd.DataFrame  # RESULTS_RUNS
    markdown: list[str] = field(default_factory=list)  # each table as Markdown


def print_results(output: ResultsOutput) -> None:
    """The Markdown tables, then where the files went."""
    for table, text in zip(output.tables, output.markdown, strict=True):
        print(f"## {table.title}\n\n{text}")
    announce(output.figures)


def results_from_runs(runs: pd.DataFrame, published: bool, common: Common, signatures: list[str]) -> ResultsOutput:
    """Write the results tables (CSV, Markdown, LaTeX) and figures of a RESULTS_RUNS table."""
    from analysis.results import base2new_table, eval_table, fewshot_table
    from analysis.results_text import cells as table_cells
    from analysis.results_text import to_latex, to_markdown
    from figures.report import ReportFigure, ReportTable
    from figures.results import (
        caption_base2new,
        caption_base_new_scatter,
        caption_eval,
        caption_fewshot,
        draw_base2new,
        draw_base_new_scatter,
        draw_eval,
        draw_fewshot,
        scatter_rows,
    )

    out = OutputDir(common.out, common.argv, "results")
    runs_csv = out.table(runs, "results_runs")
    kinds = {
        "base2new": (base2new_table(runs, published), draw_base2new, caption_base2new, "Base-to-new generalisation"),
        "fewshot": (fewshot_table(runs, published), draw_fewshot, caption_fewshot, "Few-shot accuracy"),
        "eval": (eval_table(runs), draw_eval, caption_eval, "Cross-dataset transfer and domain generalisation"),
    }
    figure_titles = {
        "base2new": "Base / New / HM accuracy per dataset",
        "fewshot": "Few-shot accuracy against shots",
        "eval": "Accuracy on the transfer targets",
    }
    figures, tables, markdown = [], [], []
    for kind, (table, draw, caption, title) in kinds.items():
        if table.empty or (table["source"] == "").sum() == 0:
            continue
        stem = f"results_{kind}"
        csv = out.table(table, stem)
        markdown.append(to_markdown(kind, table))
        md = out.text(markdown[-1], f"{stem}.md")
        tex = out.text(to_latex(kind, table), f"{stem}.tex")
        saved = _saved(draw(table), out, stem)
        side = out.sidecar(stem, signatures, [csv, md, tex, saved.png, saved.svg, runs_csv])
        headers, rows, notes = table_cells(kind, table)
        tables.append(ReportTable(stem, title, headers, rows, notes, [csv, md, tex]))
        figures.append(
            ReportFigure(stem, figure_titles[kind], caption(table), saved.png, saved.svg, [csv, runs_csv, side])
        )
        if kind == "base2new":  # the scatter's data: the rows it plots (the Average, or the only dataset)
            plotted = scatter_rows(table)
            scatter_csv = out.table(plotted, f"{stem}_scatter")
            scatter = _saved(draw_base_new_scatter(plotted), out, f"{stem}_scatter")
            scatter_side = out.sidecar(f"{stem}_scatter", signatures, [scatter_csv, scatter.png, scatter.svg, runs_csv])
            title, text = "New against Base accuracy", caption_base_new_scatter(plotted)
            data = [scatter_csv, runs_csv, scatter_side]
            figures.append(ReportFigure(f"{stem}_scatter", title, text, scatter.png, scatter.svg, data))
    if not tables:
        raise AnalysisError("the results found hold no base-to-new, few-shot or transfer numbers")
    return ResultsOutput(figures, tables, runs, markdown)


def run_results(opts: ResultsOptions, common: Common) -> ResultsOutput:
    """Every results.json under a tree, aggregated over seeds, as CSV, Markdown, LaTeX and figures."""
    from analysis.results import read_runs, summary

    runs = read_runs(opts.root)
    signatures = sorted({signature(r.model, r.pretrained, r.recipe, r.dataset, r.seed) for r in runs.itertuples()})
    output = results_from_runs(runs, opts.published, common, signatures)
    logger.debug("results: %s", summary(runs))
    if opts.readme:
        write_readme_block(Path(opts.readme), output, Path(opts.readme_figures), opts.root)
    return output


README_BEGIN = "<!-- clipfit-analyze results: begin (generated; do not edit by hand) -->"
README_END = "<!-- clipfit-analyze results: end -->"


def write_readme_block(readme: Path, output: ResultsOutput, figures_dir: Path, root: str) -> None:
    """Replace the block between README_BEGIN and README_END of ``readme`` with the results tables and
    figures (copied into ``figures_dir``), so a README's numbers are generated, never typed."""
    import shutil

    text = readme.read_text() if readme.is_file() else ""
    if README_BEGIN not in text or README_END not in text:
        raise AnalysisError(
            f"{readme} has no results block: add the two lines\n{README_BEGIN}\n{README_END}\nwhere it should go"
        )
    figures_dir.mkdir(parents=True, exist_ok=True)
    from analysis.results import provenance

    parts = [
        f"Generated by `clipfit-analyze results {root} --readme {readme.name}` from {len(output.runs)} runs. "
        + provenance(output.runs)
    ]
    for table, markdown in zip(output.tables, output.markdown, strict=True):
        parts += [f"**{table.title}** (mean ± std over seeds)", markdown.strip()]
    for figure in output.figures:
        target = figures_dir / figure.png.name
        shutil.copyfile(figure.png, target)
        link = os.path.relpath(target, readme.resolve().parent if readme.parent != Path() else Path.cwd())
        parts += [f"![{figure.title}]({link})", f"*{figure.caption}*"]
    before, rest = text.split(README_BEGIN, 1)
    after = rest.split(README_END, 1)[1]
    readme.write_text(before + README_BEGIN + "\n" + "\n\n".join(parts) + "\n" + README_END + after)
    print(f"updated {readme} ({len(output.tables)} tables, {len(output.figures)} figures in {figures_dir})")


# ----------------------------------------------------------------------------- report


def _run_row(source: Source, label: str) -> list[str]:
    import json

    meta, cfg = source.ckpt.meta, source.cfg
    result = {}
    if source.run_dir is not None and (source.run_dir / "results.json").is_file():
        result = json.loads((source.run_dir / "results.json").read_text())
    metrics = result.get("metrics") or meta.get("metrics") or {}
    zero = result.get("zero_shot") or meta.get("zero_shot") or {}

    def fmt(values: dict) -> str:
        if "hm" in values:
            return f"{values['base_acc']:.2f} / {values['new_acc']:.2f} / {values['hm']:.2f}"
        return f"{values['acc']:.2f}" if "acc" in values else "-"

    trained = sum(t.numel() for t in source.ckpt.final.values())
    return [
        label,
        str(source.path),
        str(meta.get("dataset") or "-"),
        str(meta.get("setting") or "-"),
        str(meta.get("shots") or "-"),
        str(meta.get("seed") or "-"),
        f"{cfg.optim.epochs}" if cfg else str(meta.get("epoch") or "-"),
        f"{cfg.optim.reg_weight:g}" if cfg else "-",
        f"{trained:,d}",
        fmt(zero),
        fmt(metrics),
        source.signature,
    ]


def run_report(opts: ReportOptions, common: Common) -> Path:
    """The figure report of one or more runs; returns the path of index.html."""
    from analysis.results import RESULTS_FILE, read_runs
    from figures.report import ReportTable, write_report

    if not opts.run_dirs:
        raise AnalysisError("report needs at least one run directory")
    sources = [load_source(p, opts.pretrained) for p in opts.run_dirs]
    labels = default_labels(sources)
    out = Path(common.out).expanduser()
    sub = {
        name: Common(out / name, common.argv, common.device)
        for name in ("results", "param-change", "grad-sums", "tsne", "rep-change")
    }
    figures, tables, notes = [], [], []

    result_dirs = [s.run_dir for s in sources if s.run_dir is not None and (s.run_dir / RESULTS_FILE).is_file()]
    if result_dirs:
        runs = pd.concat([read_runs(d) for d in result_dirs], ignore_index=True).drop_duplicates()
        results = results_from_runs(runs, opts.published, sub["results"], [s.signature for s in sources])
        tables += results.tables
        figures += results.figures
    else:
        notes.append("No results.json in the given run directories (unfinished runs?): no results table.")

    figures += run_param_change(
        ParamChangeOptions([str(s.path) for s in sources], labels, opts.pretrained), sub["param-change"], sources
    )
    figures += run_grad_steps(sources, labels, sub["grad-sums"])
    if not any(s.layers_file for s in sources):
        notes.append("No layers.jsonl (not a clipfit-train run directory): no per-step curves.")

    passes = [s for s in sources if s.cfg is not None]
    if opts.data_passes and passes:
        first = passes[0]
        if len(sources) > 1:
            notes.append(f"Data passes (gradients, t-SNE, CKA) use the first run only: {first.path}.")
        figures += run_grad_sums(
            GradSumsOptions(str(first.path), batches=opts.batches, all_candidates=True, curves=False), sub["grad-sums"]
        )
        figures += run_tsne(
            TsneOptions(str(first.path), max_classes=opts.max_classes, max_images=opts.max_images), sub["tsne"]
        )
        figures += run_rep_change(RepChangeOptions(str(first.path), max_images=opts.max_images), sub["rep-change"])
    elif not opts.data_passes:
        notes.append("Data passes skipped (--no-data-passes): no gradient sums, t-SNE or CKA.")
    else:
        notes.append("Data passes need a clipfit-train run directory (it records the dataset): skipped.")
    for source in sources:
        notes += [f"{source.path}: {n}" for n in source.notes]

    runs_table = ReportTable(
        "runs",
        "Runs",
        [
            "Label",
            "Run",
            "Dataset",
            "Setting",
            "Shots",
            "Seed",
            "Epochs",
            "λ",
            "Trained values",
            "Zero-shot",
            "Fine-tuned",
            "Signature",
        ],
        [_run_row(s, label) for s, label in zip(sources, labels, strict=True)],
        ["Accuracies in percent: Base / New / HM for base-to-new runs, Acc for few-shot runs."],
    )
    first_meta = sources[0].ckpt.meta
    title = (
        opts.title
        or f"clipfit report: {first_meta.get('recipe', 'clipfit')} on {first_meta.get('dataset') or 'a checkpoint'}"
    )
    intro = [
        "What the fine-tuning did, regenerated from the run directories: which tensors moved and how far "
        "(paper Fig. 3), where the training loss pushes (Fig. 4), how the image features re-cluster (Fig. 5), "
        "and how much each block's representation changed (linear CKA).",
        f"Command: clipfit-analyze {' '.join(common.argv)}",
    ]
    index, _ = write_report(out, title, intro, runs_table, tables, figures, notes)
    return index
