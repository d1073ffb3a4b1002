"""What the sub-commands share: their common options, and their one contact with clipfit's orchestration.

The command modules reach clipfit's run-level code (``clipfit.run``, ``clipfit.checkpoint``'s
``apply_checkpoint``, ``clipfit.cli.common``) only through this module. Each contact is marked
``# clipfit-core:`` with what it needs, so that the clipfit-side owners of those concepts (the run
directory, the training objective, the trained-model loader) can replace them in one pass; the
other marked spots of ``analysis`` are :mod:`analysis.sources` (loading a run),
:mod:`analysis.outputs` (versions), :mod:`analysis.grad_sums` (the training forward and loss) and
the run-directory file names copied in :mod:`analysis.results` and :mod:`analysis.dassl`. Until
then the helpers below keep today's behaviour, including the parts that duplicate clipfit (a
RunConfig rebuilt from a checkpoint, the training batches, t0).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from analysis.errors import AnalysisError
from analysis.results import RESULTS_FILE
from analysis.sources import Source, parse_pretrained
from clipfit.checkpoint import CheckpointError, apply_checkpoint  # clipfit-core: a checkpoint's init/final values
from clipfit.cli.common import run_command, setup_logging  # clipfit-core: console handlers, errors without traceback
from clipfit.config import RunConfig, resolve
from clipfit.evaluate import cap_samples
from clipfit.models import ModelBundle
from clipfit.run import (  # clipfit-core: data of a run, a run's trained model, its signature
    RunData,
    build_trained_model,
    prepare_data,
    signature,
)
from clipfit.runtime import resolve_device
from clipfit.text import encode_text

__all__ = [
    "Common",
    "DataOptions",
    "RunData",
    "data_config",
    "device",
    "eval_batches",
    "label_space_images",
    "prepare_data",
    "pretrained_text_features",
    "recorded_results",
    "run_command",
    "set_values",
    "setup_logging",
    "signature",
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
    """The run's settings with the given overrides (a Dassl checkpoint needs --dataset)."""
    # clipfit-core: the run directory's settings of a run or a bare checkpoint (clipfit.run.load_run rebuilds
    # them the same way); here a second copy, plus the --dataset ... overrides
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


def trained_model(source: Source, pretrained: str | None, device: torch.device) -> ModelBundle:
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
    # clipfit-core: the trained-model loader (model, head, recipe, final values)
    return build_trained_model(source.ckpt, device, "final", model, weights)


def set_values(bundle: ModelBundle, source: Source, which: str) -> None:
    """Put the checkpoint's ``init`` (pretrained) or ``final`` (fine-tuned) tensors into the model."""
    # clipfit-core: the trained-model loader's "at the pretrained values, then restore" context manager
    apply_checkpoint(bundle.model, source.ckpt, which, model_name=bundle.name)


def pretrained_text_features(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """t0: normalised text features of the class prompts at the model's current (pretrained) values."""
    # clipfit-core: the training objective's t0 (the trainer's copy, Trainer._class_features, runs under the
    # run's autocast through ClipHead.encode_classes; this one calls encode_text without autocast)
    with torch.no_grad():
        model.eval()
        return encode_text(model, tokens, normalize=True).float()


def train_batches(data: RunData, spec, batch_size: int, batches: int, seed: int) -> Iterator[tuple]:
    """The first ``batches`` training batches of the run, augmented exactly as training draws them."""
    # clipfit-core: the training objective's batches (a second copy of the engine's batch pipeline)
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


def eval_batches(samples, data: RunData, spec, batch_size: int) -> Iterator[tuple]:
    """Test-transformed batches of ``samples`` in order."""
    from clipfit.data.loaders import eval_loader

    yield from eval_loader(samples, data.dataset.reader, spec, batch_size, 0)


def _subset(data: RunData, name: str | None):
    name = name or data.train_subset.name
    if name not in data.subsets:
        raise AnalysisError(f"no label space '{name}' in a {', '.join(data.subsets)} run; choose one of those")
    return data.subsets[name]


def label_space_images(data: RunData, subset_name: str | None, max_classes: int | None, max_images: int | None):
    """Test images of a label space (its first ``max_classes`` classes), relabelled, evenly capped."""
    subset = _subset(data, subset_name)
    labels = subset.labels[: max_classes or None]
    wanted = set(labels)
    samples = subset.relabel([s for s in data.dataset.test if s.label in wanted])
    if not samples:
        raise AnalysisError(f"no test images in label space '{subset.name}' of {data.dataset.name}")
    return cap_samples(samples, max_images), list(subset.classnames[: len(labels)]), subset.name


def recorded_results(source: Source) -> dict:
    """The run's results.json ({} for a bare checkpoint or an unfinished run)."""
    # clipfit-core: reading a run directory's results (clipfit.run.read_results)
    if source.run_dir is not None and (source.run_dir / RESULTS_FILE).is_file():
        return json.loads((source.run_dir / RESULTS_FILE).read_text())
    return {}
