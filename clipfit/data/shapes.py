"""The shapes world: an offline, CPU-sized stand-in for "CLIP + a downstream dataset".

Classes are colour x shape pairs ("red circle", ...), drawn procedurally at 32 px with random
size, position and a small rotation. Two domains:

* ``pretrain``: clean images (dark background, saturated colours). The packaged model
  ``shapes-vit-tiny`` / ``shapes-world`` was trained contrastively on captions of this domain
  (see :mod:`clipfit.pretrain_shapes`).
* ``target``: the downstream dataset. A shifted domain (lighter noisy background, dimmed,
  desaturated and colour-cast objects, blur) on which zero-shot transfer is clearly above chance but far below
  the pretraining domain, so fine-tuning has something to do.

Every image is a pure function of (domain, split, index): splits are regenerated identically on
any machine, so few-shot subsets and split files stay comparable. Class order is chosen so that
base-to-new splitting (first half of the sorted labels = base) holds out whole concepts: the new
classes are the four shapes the base classes never show, in the same eight colours.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: load() imports the dataset classes where it builds one
    from clipfit.data.base import Dataset, LoadOptions
    from clipfit.data.records import DatasetRecord

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 225),
    "yellow": (240, 220, 30),
    "orange": (250, 135, 20),
    "purple": (135, 45, 195),
    "pink": (250, 120, 185),
    "cyan": (30, 205, 215),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross", "ring", "heart")

IMAGE_SIZE = 32
_SUPERSAMPLE = 2  # render at 2x and average-pool: cheap anti-aliasing

# Images per class in each split of the target domain, and the fixed seed of each split.
SPLIT_SIZES: dict[str, int] = {"train": 32, "val": 8, "test": 40}
_SPLIT_SEEDS: dict[tuple[str, str], int] = {
    ("pretrain", "train"): 2001,
    ("pretrain", "val"): 2002,
    ("target", "train"): 1001,
    ("target", "val"): 1002,
    ("target", "test"): 1003,
    ("pretrain", "test"): 2003,
}


# Base-to-new splits the classes by shape: base classes use these shapes, new classes the others.
BASE_SHAPES: tuple[int, ...] = (0, 2, 4, 6)  # circle, triangle, star, ring
NEW_SHAPES: tuple[int, ...] = (1, 3, 5, 7)  # square, diamond, cross, heart


def _class_order() -> list[tuple[int, int]]:
    """(colour index, shape index) pairs in label order.

    Shape-major: the first 32 labels are the 8 colours of the base shapes, the last 32 those of
    the new shapes. Base-to-new splitting (the first half of the sorted labels is base) then asks
    what the benchmarks ask: new classes are new concepts (shape words never seen while
    fine-tuning) in the same domain, with every colour present in both halves.
    """
    return [(c, s) for s in (*BASE_SHAPES, *NEW_SHAPES) for c in range(len(COLOURS))]


CLASS_CELLS: list[tuple[int, int]] = _class_order()
CLASSNAMES: list[str] = [f"{list(COLOURS)[c]} {SHAPES[s]}" for c, s in CLASS_CELLS]
TEMPLATE = "a photo of a {}."
# The model pretrained on this world (clipfit.pretrain_shapes), shipped as a packaged weights file.
MODEL = ("shapes-vit-tiny", "shapes-world")

# Caption templates of the pretraining corpus (the downstream template above is one of them).
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a {}.",
    "a drawing of a {}.",
    "an image of a {}.",
    "a picture showing a {}.",
    "the {}.",
    "a small {}.",
    "a big {}.",
)


@dataclass(frozen=True)
class DomainStyle:
    """How a domain looks. All values are fractions of the 0-255 range unless noted."""

    background: tuple[float, float]  # range of the background grey level
    background_noise: float  # std of per-pixel background noise
    colour_gain: tuple[float, float]  # range of the object colour multiplier (dimming)
    desaturate: tuple[float, float]  # range of mixing the object colour towards its grey level
    tint: float  # max per-channel colour cast added to the whole image
    blur: float  # probability of a 3x3 box blur
    pixel_noise: float  # std of noise over the whole image


DOMAINS: dict[str, DomainStyle] = {
    "pretrain": DomainStyle(
        background=(0.0, 0.12),
        background_noise=0.02,
        colour_gain=(0.85, 1.0),
        desaturate=(0.0, 0.1),
        tint=0.0,
        blur=0.0,
        pixel_noise=0.01,
    ),
    "target": DomainStyle(
        background=(0.15, 0.35),
        background_noise=0.1,
        colour_gain=(0.6, 0.85),
        desaturate=(0.25, 0.5),
        tint=0.1,
        blur=0.5,
        pixel_noise=0.04,
    ),
}


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x, y = 1.15 * u, 1.15 * (0.2 - v)
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0


# Inside-tests in units of the radius, indexed like SHAPES.
_MASKS = (
    lambda u, v: u**2 + v**2 <= 0.95**2,  # circle
    lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.78,  # square
    lambda u, v: (v <= 0.55) & (v >= 1.9 * np.abs(u) - 1.0),  # triangle
    lambda u, v: np.abs(u) + np.abs(v) <= 1.0,  # diamond
    lambda u, v: (
        np.sqrt(u**2 + v**2) <= 0.42 + 0.55 * (0.5 + 0.5 * np.cos(5 * (np.arctan2(v, u) + math.pi / 2))) ** 2.2
    ),  # five-point star
    lambda u, v: ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95)),  # cross
    lambda u, v: (u**2 + v**2 <= 0.95**2) & (u**2 + v**2 >= 0.55**2),  # ring
    _heart,
)


def _shape_mask(shape: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-masks for a batch: ``shape`` (B,), ``u``/``v`` (B, H, W) in units of the radius."""
    out = np.zeros(u.shape, dtype=bool)
    for k, inside in enumerate(_MASKS):
        sel = shape == k
        if sel.any():
            out[sel] = inside(u[sel], v[sel])
    return out


def render(labels: np.ndarray, domain: str, rng: np.random.Generator) -> np.ndarray:
    """Draw one image per label. Returns uint8 (N, 32, 32, 3).

    Args:
        labels: class indices into :data:`CLASSNAMES`.
        domain: ``"pretrain"`` or ``"target"``.
        rng: the only source of randomness, so a seed fixes every pixel.
    """
    style = DOMAINS[domain]
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    cells = np.asarray(CLASS_CELLS)[labels]
    colour = np.asarray(list(COLOURS.values()), dtype=np.float64)[cells[:, 0]] / 255.0
    shape = cells[:, 1]

    size = IMAGE_SIZE * _SUPERSAMPLE
    radius = rng.uniform(0.24, 0.42, n) * size
    cx = rng.uniform(0.0, 1.0, n) * (size - 2 * radius) + radius
    cy = rng.uniform(0.0, 1.0, n) * (size - 2 * radius) + radius
    theta = rng.uniform(-0.25, 0.25, n)  # about +-15 degrees: square and diamond stay distinct
    gain = rng.uniform(*style.colour_gain, n)[:, None]
    desat = rng.uniform(*style.desaturate, n)[:, None]
    bg_level = rng.uniform(*style.background, n)
    tint = rng.uniform(-style.tint, style.tint, (n, 3)) if style.tint else np.zeros((n, 3))
    blur = rng.uniform(0, 1, n) < style.blur

    grid = np.arange(size) + 0.5
    x = (grid[None, None, :] - cx[:, None, None]) / radius[:, None, None]
    y = (grid[None, :, None] - cy[:, None, None]) / radius[:, None, None]
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u, v = cos * x + sin * y, -sin * x + cos * y
    mask = _shape_mask(shape, u, -v).astype(np.float64)[..., None]  # -v: image rows grow downwards

    grey = colour.mean(axis=1, keepdims=True)
    obj = gain * ((1 - desat) * colour + desat * grey)
    bg = bg_level[:, None, None, None] + style.background_noise * rng.standard_normal((n, size, size, 1))
    img = mask * obj[:, None, None, :] + (1 - mask) * bg
    img = img.reshape(n, IMAGE_SIZE, _SUPERSAMPLE, IMAGE_SIZE, _SUPERSAMPLE, 3).mean(axis=(2, 4))
    if blur.any():
        padded = np.pad(img[blur], ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        img[blur] = (
            sum(padded[:, dy : dy + IMAGE_SIZE, dx : dx + IMAGE_SIZE] for dy in range(3) for dx in range(3)) / 9.0
        )
    img = img + tint[:, None, None, :] + style.pixel_noise * rng.standard_normal(img.shape)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def split_images(domain: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of one split, class-major order. Cached: a split is generated once.

    Returns:
        (images uint8 (N, 32, 32, 3), labels int64 (N,)), read-only arrays.
    """
    if (domain, split) not in _SPLIT_SEEDS:
        raise KeyError(f"the shapes world has no split {domain}/{split}; known: {sorted(_SPLIT_SEEDS)}")
    per_class = SPLIT_SIZES[split]
    labels = np.repeat(np.arange(len(CLASSNAMES)), per_class)
    images = render(labels, domain, np.random.default_rng(_SPLIT_SEEDS[(domain, split)]))
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def read_image(path: str):
    """Image reader for shapes-world sample ids ``<domain>/<split>/<index>``."""
    from PIL import Image

    domain, split, index = path.split("/")
    images, _ = split_images(domain, split)
    return Image.fromarray(images[int(index)])


def load(data_root=None, domain: str = "target", template: str = TEMPLATE):
    """The shapes world as a :class:`clipfit.data.base.Dataset` (no files needed)."""
    from clipfit.data.base import Dataset, Sample

    splits = {}
    for split in ("train", "val", "test"):
        _, labels = split_images(domain, split)
        splits[split] = [Sample(f"{domain}/{split}/{i:05d}", int(c), CLASSNAMES[c]) for i, c in enumerate(labels)]
    return Dataset(
        name="shapes" if domain == "target" else f"shapes-{domain}",
        classnames=list(CLASSNAMES),
        template=template,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        reader=read_image,
        # Shapes fill a third of a 32 px image: crops below half the area often lose the object.
        train_crop_scale=(0.5, 1.0),
        split_source="generated",
    )


@dataclass(frozen=True)
class ShapesReader:
    """The reader of a shapes-world record (:mod:`clipfit.data.catalog`): the domain's generated splits."""

    domain: str  # "target" (the dataset shapes) or "pretrain" (shapes-pretrain)

    def __call__(self, record: DatasetRecord, root: Path | None, options: LoadOptions) -> Dataset:
        return load(root, domain=self.domain, template=record.template)
