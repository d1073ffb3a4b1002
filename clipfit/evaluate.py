"""Top-1 accuracy of zero-shot and fine-tuned models over a run's label spaces.

Base = accuracy on base test images among base classes; New = accuracy of the same model on new
test images among new classes (new-class text features come from the fine-tuned text encoder);
HM = 2BN / (B + N) (PAPER.md section 7; :mod:`clipfit.metrics`). Accuracies are in percent.
Features come through the recipe's head; zero-shot numbers always use plain CLIP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from clipfit.config import RunConfig
from clipfit.console import progress
from clipfit.data.base import DataError, Dataset, ImageReader, Sample
from clipfit.data.loaders import workers_for
from clipfit.data.prepare import RunData
from clipfit.data.sampling import ClassSubset
from clipfit.data.testcache import CachePolicy, TestImages
from clipfit.heads import ClipHead
from clipfit.metrics import summarise
from clipfit.models import ModelBundle, PreprocessSpec
from clipfit.runtime import DistEnv, all_reduce_sum, autocast
from clipfit.towers import image_input_dtype


@dataclass(frozen=True)
class EvalSettings:
    """Where and how to evaluate (never changes an accuracy, except ``max_images``)."""

    device: torch.device
    precision: str = "fp32"  # autocast precision
    batch_size: int = 256  # images per forward pass
    num_workers: int | None = None  # DataLoader workers; None: none for generated data, else half the cores
    max_images: int | None = None  # cap on test images per label space (quick checks; not comparable)
    env: DistEnv = DistEnv()  # this process's shard under torchrun
    cache: CachePolicy = field(default_factory=CachePolicy.parse)  # the test-set cache (clipfit.data.testcache)

    @classmethod
    def of(cls, cfg: RunConfig, device: torch.device, precision: str, env: DistEnv = DistEnv()) -> EvalSettings:
        cache = CachePolicy.parse(cfg.eval_cache, cfg.eval_decoder)
        return cls(device, precision, cfg.eval_batch_size, cfg.data.num_workers, cfg.max_eval_images, env, cache)

    def workers(self, dataset: Dataset) -> int:
        return workers_for(self.num_workers, dataset)


def cap_samples(samples: Sequence[Sample], limit: int | None) -> list[Sample]:
    """At most ``limit`` samples, evenly spaced over the list (keeps class balance of sorted lists)."""
    samples = list(samples)
    if limit is None or len(samples) <= limit:
        return samples
    step = len(samples) / limit
    return [samples[int(i * step)] for i in range(limit)]


@torch.no_grad()
def image_features(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    precision: str = "fp32",
    desc: str = "features",
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised fp32 image features and labels of every batch of ``loader``."""
    encode = encode or model.encode_image
    dtype = image_input_dtype(model)
    feats, labels = [], []
    for images, targets in progress(loader, desc, count=lambda batch: len(batch[0])):
        with autocast(device, precision):
            out = encode(images.to(device, dtype, non_blocking=True))
        feats.append(F.normalize(out.float(), dim=-1))
        labels.append(targets.to(device))
    if not feats:
        return torch.zeros(0, 1, device=device), torch.zeros(0, dtype=torch.long, device=device)
    return torch.cat(feats), torch.cat(labels)


def _per_image_predictions(
    model: nn.Module,
    head: ClipHead,
    inputs: torch.Tensor,
    feats: torch.Tensor,
    device: torch.device,
    precision: str,
    sequences: int = 8192,
) -> torch.Tensor:
    """Predicted classes of a head whose class features depend on the image (CoCoOp), a chunk of images
    at a time so that one text pass holds at most ``sequences`` prompts."""
    chunk = max(1, sequences // max(1, len(inputs)))
    predicted = []
    for start in range(0, len(feats), chunk):
        batch = feats[start : start + chunk]
        with autocast(device, precision):
            text = F.normalize(head.encode_classes_per_image(model, inputs, batch).float(), dim=-1)
        predicted.append(torch.einsum("bd,bcd->bc", batch, text).argmax(dim=1))
    return torch.cat(predicted) if predicted else torch.zeros(0, dtype=torch.long, device=feats.device)


@torch.no_grad()
def predict_classes(
    model: nn.Module,
    head: ClipHead,
    inputs: torch.Tensor,
    feats: torch.Tensor,
    device: torch.device,
    precision: str = "fp32",
) -> torch.Tensor:
    """The predicted class (index into the label space of ``inputs``) of each normalised image feature,
    through the head's class features (per image for heads with ``per_image``)."""
    if head.per_image:
        return _per_image_predictions(model, head, inputs, feats, device, precision)
    with autocast(device, precision):
        class_features = F.normalize(head.encode_classes(model, inputs).float(), dim=-1)
    if len(feats) == 0:
        return torch.zeros(0, dtype=torch.long, device=feats.device)
    return (feats @ class_features.float().T).argmax(dim=1)


@torch.no_grad()
def subset_accuracy(
    model: nn.Module,
    tokenizer: Callable,
    subset: ClassSubset,
    template: str,
    test: Sequence[Sample],
    reader: ImageReader,
    spec: PreprocessSpec,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 256,
    num_workers: int = 0,
    env: DistEnv = DistEnv(),
    head: ClipHead | None = None,
    images: TestImages | None = None,
    build: bool = True,
) -> float:
    """Accuracy (percent) on the test images of ``subset``, among its classes.

    ``test`` holds original labels; they are relabelled to the subset. Features come through the
    recipe's ``head`` (plain CLIP by default: the template's text features and the image encoder).
    Under torchrun each process scores its shard and the counts are summed. ``images`` is the
    dataset's test split through the test-set cache (:mod:`clipfit.data.testcache`; ``build``: write
    an entry when there is none); without it the images are decoded and normalised the same way.
    """
    head = head or ClipHead()
    was_training = model.training
    model.eval()
    samples = subset.relabel(test)
    inputs = head.class_inputs(tokenizer, model, template, subset.classnames).to(device)
    images = images or TestImages(spec, reader, policy=CachePolicy(enabled=False))
    loader = images.batches(
        samples, batch_size, device, num_workers=num_workers, build=build, rank=env.rank, world_size=env.world_size
    )
    encode = lambda images: head.encode_images(model, images)  # noqa: E731
    feats, labels = image_features(model, loader, device, precision, f"eval {subset.name}", encode)
    correct = int(predict_classes(model, head, inputs, feats, device, precision).eq(labels).sum())
    counts = torch.tensor([correct, len(labels)], device=device)
    all_reduce_sum(counts)
    model.train(was_training)
    if counts[1].item() == 0:  # an accuracy of nothing is not 0%: it would enter HM and tables as a result
        raise DataError(
            f"no test images in label space '{subset.name}' ({len(subset.labels)} classes): every class needs test "
            "images (a folder:/csv: dataset's test split, or a larger --max-eval-images)"
        )
    return 100.0 * counts[0].item() / counts[1].item()


def evaluate_subsets(
    bundle: ModelBundle,
    dataset: Dataset,
    subsets: Mapping[str, ClassSubset],
    template: str,
    settings: EvalSettings,
    head: ClipHead | None = None,
) -> dict[str, float]:
    """Accuracy on the test images of every label space, as metrics (Base/New/HM or Acc), in percent.

    ``head`` is the recipe's head (CoOp's context, CLIP-Adapter's adapter); plain CLIP when None.
    """
    accuracies = {}
    images = TestImages.of(dataset, bundle.preprocess, settings.cache)
    for name, subset in subsets.items():
        wanted = set(subset.labels)
        test = cap_samples([s for s in dataset.test if s.label in wanted], settings.max_images)
        accuracies[name] = subset_accuracy(
            bundle.model,
            bundle.tokenizer,
            subset,
            template,
            test,
            dataset.reader,
            bundle.preprocess,
            settings.device,
            precision=settings.precision,
            batch_size=settings.batch_size,
            num_workers=settings.workers(dataset),
            env=settings.env,
            head=head,
            images=images,
            build=settings.max_images is None,  # a capped evaluation reads an entry but does not write one
        )
    return summarise(accuracies)


def zero_shot_metrics(
    bundle: ModelBundle, data: RunData, settings: EvalSettings, template: str | None = None
) -> dict[str, float]:
    """CLIP itself (whatever head a recipe adds) on a run's label spaces, at the model's current values,
    with the fine-tuning template (or ``template``)."""
    return evaluate_subsets(bundle, data.dataset, data.subsets, template or data.template, settings, ClipHead())
