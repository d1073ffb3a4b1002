"""What the sub-commands share: their common options, and the clipfit pieces they use.

Every contact of the commands with clipfit's run-level code is here: the run's data
(:mod:`clipfit.data.prepare`), its trained model (:mod:`clipfit.trained`), its values at the
pretrained point (:func:`clipfit.checkpoint.checkpoint_values`), its training objective and batches
(:mod:`clipfit.objective`, :class:`clipfit.data.loaders.TrainBatches`), its test images (through the
test-set cache, :mod:`clipfit.data.testcache`) and its files (:mod:`clipfit.rundir`). None of them is
re-implemented here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from analysis.errors import AnalysisError
from analysis.sources import WEIGHTS_KIND, Source, find_runs, load_source, parse_pretrained, weights_source
from analysis.tsne import spread
from clipfit.checkpoint import CheckpointError, apply_checkpoint, checkpoint_values
from clipfit.config import RunConfig, resolve
from clipfit.console import run_command, setup_logging
from clipfit.data.loaders import TrainBatches
from clipfit.data.prepare import RunData, prepare_data
from clipfit.data.testcache import TestImages
from clipfit.evaluate import cap_samples
from clipfit.files import check_output_folder
from clipfit.heads import ClipHead
from clipfit.models import ModelBundle, build_model
from clipfit.provenance import signature
from clipfit.rundir import RunDir
from clipfit.runtime import resolve_device
from clipfit.trained import build_trained_model

__all__ = [
    "Common",
    "DataOptions",
    "RunData",
    "check_output_folder",
    "checkpoint_values",
    "data_config",
    "device",
    "eval_batches",
    "label_space_images",
    "load_sources",
    "prepare_data",
    "recorded_results",
    "run_command",
    "setup_logging",
    "signature",
    "test_images",
    "train_batches",
    "trained_model",
]


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


def device(name: str) -> torch.device:
    """The torch device of ``--device``; a device this machine lacks is an AnalysisError."""
    try:
        return resolve_device(name)
    except RuntimeError as exc:
        raise AnalysisError(str(exc)) from None


def data_config(source: Source | None, data: DataOptions, model: tuple[str, str] | None = None) -> RunConfig:
    """The source's settings (recorded by its run, or rebuilt from its checkpoint) with the given overrides.

    An original CLIPFit checkpoint records no dataset: it needs --dataset.
    """
    if source is not None and source.cfg is not None:
        cfg = RunConfig.from_dict(source.cfg.to_dict())
    else:
        cfg = RunConfig()
        if source is not None:
            cfg.model.name, cfg.model.pretrained = source.ckpt.meta["model"], source.ckpt.meta["pretrained"]
            cfg.recipe = source.ckpt.meta.get("recipe", cfg.recipe)
        elif model is not None:
            cfg.model.name, cfg.model.pretrained = model
    if source is not None and source.cfg is None and data.dataset is None:
        raise AnalysisError(
            f"{source.path} ({source.kind}) does not record its dataset; pass --dataset (and --data-root)"
        )
    for key in ("dataset", "data_root", "setting", "shots", "template"):
        if getattr(data, key) is not None:
            setattr(cfg.data, key, getattr(data, key))
    if data.seed is not None:
        cfg.seed = data.seed
    return resolve(cfg)


def trained_model(source: Source, pretrained: str | None, device: torch.device) -> ModelBundle:
    """The source's model with its fine-tuned values; ``pretrained`` may re-point a clipfit run's weights.

    Two weight files: the first file's network (plain CLIP) holding the second's values."""
    if source.kind == WEIGHTS_KIND:
        meta = source.ckpt.meta
        bundle = build_model(meta["model"], meta["pretrained"], device)
        apply_checkpoint(bundle.model, source.ckpt, "final", model_name=bundle.name)
        bundle.head = ClipHead()
        return bundle
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


def load_sources(
    checkpoints: list[str], weights: list[str] | None, pretrained: str | None, recipe: str = "clipfit"
) -> list[Source]:
    """The sources of CKPT arguments, or of ``--weights A B`` (two weight files of one architecture)."""
    if weights:
        if checkpoints:
            raise AnalysisError("give either checkpoints (CKPT ...) or --weights ARCH:A ARCH:B, not both")
        if len(weights) != 2:
            raise AnalysisError(f"--weights takes two ARCH:FILE arguments (A, then B), got {len(weights)}")
        return [weights_source(*weights)]
    if not checkpoints:
        raise AnalysisError("nothing to analyse: give run directories (CKPT ...) or --weights ARCH:A ARCH:B")
    return [load_source(p, pretrained, recipe) for p in find_runs(checkpoints)]  # a sweep folder: its runs


def train_batches(
    data: RunData, spec, batch_size: int, batches: int, seed: int, cache: str = "none"
) -> Iterator[tuple]:
    """The first ``batches`` training batches of the run, augmented exactly as training draws them
    (``cache``: the run's ``data.train_cache``)."""
    reader, scale = data.dataset.reader, data.dataset.train_crop_scale
    return TrainBatches(data.train, reader, spec, scale, batch_size, seed, cache=cache).first(batches)


def test_images(data: RunData, spec) -> TestImages:
    """The run's test split at the model's input, read from the test-set cache when a run left an entry there
    (an analysis never writes one: it embeds a few hundred images)."""
    return TestImages.of(data.dataset, spec)


def eval_batches(samples, data: RunData, spec, batch_size: int) -> Iterator[tuple]:
    """Test-transformed batches of ``samples`` in order (normalised on the CPU; test images from the cache)."""
    yield from test_images(data, spec).batches(samples, batch_size, "cpu", build=False)


def _subset(data: RunData, name: str | None):
    name = name or data.train_subset.name
    if name not in data.subsets:
        raise AnalysisError(f"no label space '{name}' in a {', '.join(data.subsets)} run; choose one of those")
    return data.subsets[name]


def label_space_images(data: RunData, subset_name: str | None, max_classes: int | None, max_images: int | None):
    """Test images of a label space, relabelled 0..k-1, evenly capped; with ``max_classes``, that many of its classes
    spread over it and over the words of their names (:func:`analysis.tsne.spread`: not the first ones, which on a
    dataset ordered by one attribute, such as the shapes world's shape-major labels, would all share it)."""
    subset = _subset(data, subset_name)
    if max_classes and max_classes < len(subset.labels):
        kept = sorted(spread(subset.classnames, max_classes))
        subset = replace(
            subset, labels=tuple(subset.labels[i] for i in kept), classnames=tuple(subset.classnames[i] for i in kept)
        )
    wanted = set(subset.labels)
    samples = subset.relabel([s for s in data.dataset.test if s.label in wanted])
    if not samples:
        raise AnalysisError(f"no test images in label space '{subset.name}' of {data.dataset.name}")
    return cap_samples(samples, max_images), list(subset.classnames), subset.name


def recorded_results(source: Source) -> dict:
    """The run's results.json ({} for a bare checkpoint or an unfinished run)."""
    if source.run_dir is not None and RunDir(source.run_dir).state == "finished":
        return RunDir(source.run_dir).results()
    return {}
