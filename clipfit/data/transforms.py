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


def test_pixels(spec: PreprocessSpec) -> T.Compose:
    """The deterministic part of :func:`test_transform`: the resized, centre-cropped image as uint8 (3, S, S).

    :func:`normalise_table` then gives exactly the values :func:`test_transform` gives (tested bit for bit):
    this split is what lets the preprocessed test-set cache (:mod:`clipfit.data.testcache`) keep uint8 pixels
    and normalise them on the model's device.
    """
    return T.Compose(
        [
            T.Resize(spec.size, interpolation=interpolation(spec), antialias=True),
            T.CenterCrop(spec.size),
            T.PILToTensor(),
        ]
    )


def normalise_table(spec: PreprocessSpec) -> torch.Tensor:
    """(3, 256) float32: ToTensor + Normalize of every uint8 value of each channel, computed on the CPU with
    torchvision's own operations, so a lookup in it equals :func:`test_transform`'s arithmetic on any device."""
    values = torch.arange(256, dtype=torch.uint8).expand(3, 1, 256)
    return TF.normalize(values.to(torch.float32).div(255), spec.mean, spec.std).reshape(3, 256)


def normalise(pixels: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """float32 images from uint8 (B, 3, H, W) pixels by lookup in ``table`` (:func:`normalise_table`, on the
    pixels' device): on a GPU this is where normalisation happens, after a uint8 copy (a quarter of the bytes)."""
    out = torch.empty(pixels.shape, dtype=torch.float32, device=pixels.device)
    rest = (pixels.shape[0], *pixels.shape[2:])
    for c in range(pixels.shape[1]):
        out[:, c] = table[c].index_select(0, pixels[:, c].reshape(-1).to(torch.int32)).view(rest)
    return out


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
