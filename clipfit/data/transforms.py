"""Image transforms: CLIP's test transform and a seeded version of its training augmentation.

Training augmentation (PAPER.md section 3) is RandomResizedCrop(size, scale) + horizontal flip,
as Dassl applies it: to the decoded image at its full resolution (:func:`image_tensor`), or, with
``--train-cache crop-size``, to a copy cached with its short side resized to the crop size
(:func:`decode_for_cache`). Its randomness comes from a per-sample ``torch.Generator`` seeded from
(run seed, epoch, position), never from the global RNG: a run gives the same batches with any
number of DataLoader workers, on any number of processes, and after a resume.
"""

from __future__ import annotations

import math

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from clipfit.models import PreprocessSpec

_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def interpolation(spec: PreprocessSpec) -> InterpolationMode:
    return InterpolationMode(spec.interpolation)


def test_transform(spec: PreprocessSpec) -> T.Compose:
    """Resize the short side to the input size, center crop, normalise (CLIP's eval transform)."""
    return T.Compose(
        [
            T.Resize(spec.size, interpolation=interpolation(spec), antialias=True),
            T.CenterCrop(spec.size),
            T.ToTensor(),
            T.Normalize(spec.mean, spec.std),
        ]
    )


def image_tensor(image: Image.Image) -> torch.Tensor:
    """uint8 (3, H, W) tensor of an image at its own resolution (what Dassl's RandomResizedCrop crops)."""
    return TF.pil_to_tensor(image.convert("RGB"))


def decode_for_cache(image: Image.Image, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 (3, H, W) tensor with the short side resized to the crop size (``--train-cache crop-size``)."""
    if min(image.size) != spec.size:
        image = TF.resize(image, spec.size, interpolation=interpolation(spec), antialias=True)
    return TF.pil_to_tensor(image.convert("RGB"))


def _crop_params(height: int, width: int, scale: tuple[float, float], g: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, drawing from ``g`` instead of the global RNG."""
    area = height * width
    log_ratio = (math.log(_RATIO[0]), math.log(_RATIO[1]))
    for _ in range(10):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(1, generator=g).item())
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand(1, generator=g).item())
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, (1,), generator=g))
            j = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return i, j, h, w
    # Fallback to a central crop, as torchvision does.
    in_ratio = width / height
    if in_ratio < _RATIO[0]:
        w, h = width, round(width / _RATIO[0])
    elif in_ratio > _RATIO[1]:
        h, w = height, round(height * _RATIO[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def train_augment(
    image: torch.Tensor, spec: PreprocessSpec, scale: tuple[float, float], g: torch.Generator
) -> torch.Tensor:
    """RandomResizedCrop + horizontal flip + normalise of a uint8 (3, H, W) image, drawn from ``g``.

    The crop box is drawn on the size of ``image``: the original image's size in the default
    pipeline (Dassl's geometry), the cached copy's with ``--train-cache crop-size``.
    """
    i, j, h, w = _crop_params(image.shape[1], image.shape[2], scale, g)
    out = TF.resized_crop(image, i, j, h, w, [spec.size, spec.size], interpolation=interpolation(spec), antialias=True)
    if torch.rand(1, generator=g).item() < 0.5:
        out = TF.hflip(out)
    return TF.normalize(out.float().div_(255.0), spec.mean, spec.std)
