"""Datasets as plain lists of samples, plus how to read one image.

Every dataset, from the CoOp benchmarks to the generated shapes world, becomes a
:class:`Dataset`: class names, one prompt template, and train/val/test lists of
:class:`Sample` (relative path, label, class name), the same triple as the CoOp split files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from clipfit.errors import ClipfitError


class DataError(ClipfitError, RuntimeError):
    """Data could not be found or read; the message says what was expected and where to get it."""


@dataclass(frozen=True)
class Sample:
    """One labelled image: ``path`` is relative to the dataset's image root (or an id)."""

    path: str
    label: int
    classname: str

    def to_json(self) -> list:
        return [self.path, self.label, self.classname]

    @classmethod
    def from_json(cls, item: list) -> Sample:
        path, label, classname = item
        return cls(str(path), int(label), str(classname))


ImageReader = Callable[[str], Image.Image]


@dataclass(frozen=True)
class LoadOptions:
    """How to read a dataset beyond its name and data root (the CLI's data flags)."""

    make_split: bool = False  # draw a random split when a benchmark's published split file is missing
    classnames: str | None = None  # class-name file of a folder:/csv: dataset (one name per line, label order)


class FileReader:
    """Opens ``root / path`` as an RGB PIL image; a broken file is named in the error."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __call__(self, path: str) -> Image.Image:
        full = self.root / path
        try:
            with Image.open(full) as image:
                return image.convert("RGB")
        except FileNotFoundError:
            raise DataError(f"image not found: {full}") from None
        except Exception as exc:
            raise DataError(f"cannot read image {full}: {type(exc).__name__}: {exc}") from exc

    def __repr__(self) -> str:
        return f"FileReader({str(self.root)!r})"


@dataclass
class Dataset:
    """A dataset with its three splits, labels 0..len(classnames)-1."""

    name: str
    classnames: list[str]
    template: str
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    reader: ImageReader
    train_crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range (paper: 0.08-1)
    split_source: str = ""  # where the split came from (a split file name, "folders", "generated")
    comparable: bool = True  # False when the split was drawn at random (--make-split)
    fewshot_val: bool = True  # False for ImageNet, whose val split is its test split (CoOp samples train only)
    info: dict = field(default_factory=dict)  # reader-specific notes (e.g. where the class names came from)
    fewshot_dir: Path | None = None  # where few-shot draws are saved as shot_K-seed_S.json (None: not saved)
    fewshot_fallback: Path | None = None  # used instead when fewshot_dir cannot be written (read-only data)

    def summary(self) -> str:
        return (
            f"{self.name}: {len(self.classnames)} classes, {len(self.train)} train / {len(self.val)} val / "
            f"{len(self.test)} test images ({self.split_source or 'unknown split'})"
        )
