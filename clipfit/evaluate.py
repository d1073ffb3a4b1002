"""Top-1 accuracy of zero-shot and fine-tuned models, and the base-to-new metrics.

Base = accuracy on base test images among base classes; New = accuracy of the same model on new
test images among new classes (new-class text features come from the fine-tuned text encoder);
HM = 2BN / (B + N) (PAPER.md section 7). Accuracies are in percent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from clipfit.data.base import DataError, ImageReader, Sample
from clipfit.data.loaders import eval_loader
from clipfit.data.sampling import ClassSubset
from clipfit.heads import ClipHead
from clipfit.models import PreprocessSpec
from clipfit.runtime import DistEnv, all_reduce_sum, autocast


def harmonic_mean(base: float, new: float) -> float:
    """2BN / (B + N); 0 when both are 0."""
    return 2 * base * new / (base + new) if base + new > 0 else 0.0


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
    feats, labels = [], []
    for images, targets in tqdm(loader, desc=desc, disable=None, leave=False):
        with autocast(device, precision):
            out = encode(images.to(device, non_blocking=True))
        feats.append(F.normalize(out.float(), dim=-1))
        labels.append(targets.to(device))
    if not feats:
        return torch.zeros(0, 1, device=device), torch.zeros(0, dtype=torch.long, device=device)
    return torch.cat(feats), torch.cat(labels)


def correct_count(features: torch.Tensor, labels: torch.Tensor, class_features: torch.Tensor) -> int:
    if len(features) == 0:
        return 0
    return int((features @ class_features.T).argmax(dim=1).eq(labels).sum())


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
) -> float:
    """Accuracy (percent) on the test images of ``subset``, among its classes.

    ``test`` holds original labels; they are relabelled to the subset. Features come through the
    recipe's ``head`` (plain CLIP by default: the template's text features and the image encoder).
    Under torchrun each process scores its shard and the counts are summed.
    """
    head = head or ClipHead()
    was_training = model.training
    model.eval()
    samples = subset.relabel(test)
    inputs = head.class_inputs(tokenizer, model, template, subset.classnames).to(device)
    with autocast(device, precision):
        class_features = F.normalize(head.encode_classes(model, inputs).float(), dim=-1)
    loader = eval_loader(samples, reader, spec, batch_size, num_workers, env.rank, env.world_size)
    encode = lambda images: head.encode_images(model, images)  # noqa: E731
    feats, labels = image_features(model, loader, device, precision, f"eval {subset.name}", encode)
    counts = torch.tensor([correct_count(feats, labels, class_features.float()), len(labels)], device=device)
    all_reduce_sum(counts)
    model.train(was_training)
    if counts[1].item() == 0:  # an accuracy of nothing is not 0%: it would enter HM and tables as a result
        raise DataError(
            f"no test images in label space '{subset.name}' ({len(subset.labels)} classes): every class needs test "
            "images (a folder:/csv: dataset's test split, or a larger --max-eval-images)"
        )
    return 100.0 * counts[0].item() / counts[1].item()


def summarise(accuracies: dict[str, float]) -> dict[str, float]:
    """{"base": b, "new": n} -> {"base_acc", "new_acc", "hm"}; {"all": a} -> {"acc"}."""
    if "all" in accuracies:
        return {"acc": round(accuracies["all"], 4)}
    base, new = accuracies["base"], accuracies["new"]
    return {"base_acc": round(base, 4), "new_acc": round(new, 4), "hm": round(harmonic_mean(base, new), 4)}
