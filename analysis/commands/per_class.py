"""``clipfit-analyze per-class``: zero-shot against fine-tuned accuracy of every class, base and new.

For each run, the test images of every label space go through the fine-tuned model with the recipe's
head and through plain CLIP at the pretrained values (:func:`clipfit.checkpoint.checkpoint_values`),
scored by :func:`clipfit.evaluate.predict_classes` (the evaluation's own features and scoring); the
tables are :mod:`analysis.per_class`: delta(c) = ft_acc(c) - zs_acc(c), the confusions of the classes that
lost most, and cos(t_c, t0_c) of each class's text feature against delta with Pearson's r and Spearman's
rho. Seeds of one configuration are averaged; configurations are drawn one row each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F

from analysis.commands.bundle import announce, write_figure
from analysis.commands.common import (
    Common,
    DataOptions,
    checkpoint_values,
    data_config,
    device,
    eval_batches,
    load_sources,
    prepare_data,
    trained_model,
)
from analysis.errors import AnalysisError
from analysis.outputs import OutputDir
from analysis.per_class import (
    class_configs,
    confusion_change,
    confusion_counts,
    correlations,
    per_class_table,
    worst_classes,
)
from analysis.sources import Source, configurations, default_labels
from clipfit.evaluate import cap_samples, image_features, predict_classes
from clipfit.heads import ClipHead
from figures.per_class import caption_per_class, draw_per_class, finding_per_class
from figures.report import ReportFigure


@dataclass
class PerClassOptions:
    """Which runs and images ``per-class`` scores."""

    checkpoints: list[str]  # run directories (several: seeds aggregated, configurations side by side)
    weights: list[str] | None = None  # ARCH:FILE_A ARCH:FILE_B: two weight files (needs --dataset)
    pretrained: str | None = None  # MODEL:SOURCE (required for original CLIPFit checkpoints)
    recipe: str = "clipfit"  # tensors an original CLIPFit run trained
    data: DataOptions = field(default_factory=DataOptions)  # dataset and draw (default: the run's)
    max_images: int | None = None  # test images per label space at most (evenly spaced); None: all
    worst: int = 5  # classes whose confusions are shown (those that lost most)
    batch_size: int = 256  # images per forward pass


OPTIONS = PerClassOptions


@torch.no_grad()
def _class_features(bundle, head, inputs) -> torch.Tensor:
    return F.normalize(head.encode_classes(bundle.model, inputs).float(), dim=-1)


def score_run(source: Source, opts: PerClassOptions, dev: torch.device, label: str, config: str):
    """(PER_CLASS rows, confusion counts) of one run over its label spaces."""
    cfg = data_config(source, opts.data)
    data = prepare_data(cfg)
    bundle = trained_model(source, opts.pretrained, dev)
    model, head, plain = bundle.model, bundle.head or ClipHead(), ClipHead()
    tables, counts = [], []
    for name, subset in data.subsets.items():
        wanted = set(subset.labels)
        samples = subset.relabel(cap_samples([s for s in data.dataset.test if s.label in wanted], opts.max_images))
        if not samples:
            raise AnalysisError(f"no test images in label space '{name}' of {data.dataset.name}")

        classnames = list(subset.classnames)
        inputs = head.class_inputs(bundle.tokenizer, model, data.template, classnames).to(dev)
        encode = lambda images: head.encode_images(model, images)  # noqa: E731
        loader = eval_batches(samples, data, bundle.preprocess, opts.batch_size)
        feats, labels = image_features(model, loader, dev, desc=f"{name} (fine-tuned)", encode=encode)
        tuned = predict_classes(model, head, inputs, feats, dev)
        t = _class_features(bundle, head, inputs)  # CoCoOp: the context alone (without the image's token)
        with checkpoint_values(model, source.ckpt, "init", model_name=bundle.name):
            zs_inputs = plain.class_inputs(bundle.tokenizer, model, data.template, classnames).to(dev)
            loader = eval_batches(samples, data, bundle.preprocess, opts.batch_size)
            zs_feats, _ = image_features(model, loader, dev, desc=f"{name} (zero-shot)")
            zero = predict_classes(model, plain, zs_inputs, zs_feats, dev)
            t0 = _class_features(bundle, plain, zs_inputs)
        cos = (t * t0).sum(dim=-1).cpu().numpy()
        args = (labels.cpu().numpy(), zero.cpu().numpy(), tuned.cpu().numpy(), classnames)
        tables.append(per_class_table(*args, cos, name, label, config))
        counts.append(confusion_counts(*args, name, label, config))
    return pd.concat(tables, ignore_index=True), pd.concat(counts, ignore_index=True)


def run_per_class(opts: PerClassOptions, common: Common, sources: list[Source] | None = None) -> list[ReportFigure]:
    """Per-class accuracy change of every run, the confusion change of the worst classes, and text movement."""
    dev = device(common.device)
    sources = sources or load_sources(opts.checkpoints, opts.weights, opts.pretrained, opts.recipe)
    labels, config_of = default_labels(sources), configurations(sources)
    scored = [score_run(s, opts, dev, label, c) for s, label, c in zip(sources, labels, config_of, strict=True)]
    per_class = pd.concat([t for t, _ in scored], ignore_index=True)
    counts = pd.concat([c for _, c in scored], ignore_index=True)
    configs = class_configs(per_class)
    confusion = confusion_change(counts, worst_classes(configs, opts.worst))
    correlation = correlations(configs)
    tables = {
        "per_class": per_class,
        "per_class_configs": configs,
        "per_class_confusion": confusion,
        "per_class_correlation": correlation,
    }
    summary = {
        "runs": dict(zip(labels, config_of, strict=True)),
        "max_images": opts.max_images,
        "correlation": correlation.to_dict("records"),
    }
    figure = write_figure(
        OutputDir(common.out, common.argv, "per-class"),
        "per_class",
        tables,
        lambda: draw_per_class(configs, confusion, correlation),
        "Per class: zero-shot against fine-tuned accuracy, confusions and text-feature movement",
        caption_per_class(configs, confusion, correlation),
        [s.signature for s in sources],
        summary,
        finding=finding_per_class(configs, correlation),
    )
    return [figure]


def execute(opts: PerClassOptions, common: Common) -> None:
    """Run, then print where the figure went."""
    announce(run_per_class(opts, common))
