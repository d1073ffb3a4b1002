"""Datasets as plain lists of samples, plus how to read one image.

Every dataset, from the CoOp benchmarks to the generated shapes world, becomes a
:class:`Dataset`: class names, one prompt template, and train/val/test lists of
:class:`Sample` (relative path, label, class name), the same triple as the CoOp split files.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
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


def check_relative(path: object) -> str | None:
    """Why ``path`` (an entry of a split or few-shot file) is not a path inside the image folder, else None.

    Split files name images relative to the image folder: an absolute path or a ``..`` part would
    reach files elsewhere on the machine, so both are refused (CSV files may name any file).
    """
    if not isinstance(path, str) or not path.strip():
        return "the path is empty" if isinstance(path, str) else f"the path is {path!r}, not a string"
    if "\0" in path:
        return "the path holds a NUL character"
    parts = PurePosixPath(path.replace("\\", "/"))
    if parts.is_absolute():
        return "the path is absolute; paths are relative to the image folder"
    if ".." in parts.parts:
        return "the path goes up with '..'; paths stay inside the image folder"
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB copy of ``image``, with 16- and 32-bit integer images scaled to 8 bits.

    PIL's own conversion of a 16-bit image (a 16-bit greyscale PNG opens as mode I;16 or I) clips
    every value above 255 to white; here the 16-bit range is mapped onto 0..255 instead.
    """
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image.convert("I") if image.mode != "I" else image, dtype=np.int64)
        image = Image.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8), mode="L")
    return image.convert("RGB")


class FileReader:
    """Opens ``root / path`` as an RGB PIL image; a broken or out-of-place file is named in the error.

    Every file must be a regular file (a FIFO or device would block or never end). By default a
    path must be relative and stay inside ``root`` (``any_path=True``: a CSV may name files
    anywhere); ``confine_links=True`` also refuses symbolic links that lead out of ``root`` (a
    folder dataset is the files inside its folder).
    """

    def __init__(self, root: Path, *, any_path: bool = False, confine_links: bool = False) -> None:
        self.root = Path(root)
        self.any_path, self.confine_links = any_path, confine_links

    def problem(self, path: str) -> str | None:
        """Why ``path`` cannot be opened as an image file of this dataset (short, without the path), else None."""
        full = self.root / path
        if not self.any_path:
            why = check_relative(path)
            if why:
                return why
        if self.confine_links:
            real, root = os.path.realpath(full), os.path.realpath(self.root)
            if os.path.commonpath([real, root]) != root:
                return f"a link to {real}, outside the dataset folder (folder datasets read only the files inside)"
        try:
            mode = os.stat(full).st_mode
        except FileNotFoundError:
            return "not found"
        except OSError as exc:
            return exc.strerror or str(exc)
        if not stat.S_ISREG(mode):
            return "a folder, not an image file" if stat.S_ISDIR(mode) else "not a regular file (a device or pipe?)"
        return None

    def __call__(self, path: str) -> Image.Image:
        full = self.root / path
        why = self.problem(path)
        if why:
            raise DataError(f"cannot read image {full}: {why}")
        try:
            with Image.open(full) as image:
                return to_rgb(image)
        except Exception as exc:
            raise DataError(f"cannot read image {full}: {_reason(exc)}") from exc

    def check(self, path: str) -> str | None:
        """Why the image at ``path`` cannot be used, from its header (and, for PNG, its chunk checksums), else None.

        Cheap: the pixels are not decoded, so a JPEG cut short is found only when it is read.
        """
        why = self.problem(path)
        if why:
            return why
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # PIL still refuses twice the limit
                with Image.open(self.root / path) as image:
                    image.verify()
        except Exception as exc:
            return _reason(exc)
        return None

    def __repr__(self) -> str:
        return f"FileReader({str(self.root)!r})"


def _reason(exc: Exception) -> str:
    """What went wrong in words a user can act on."""
    if isinstance(exc, Image.DecompressionBombError):
        return (
            f"its declared size is too large to decode safely ({exc}); PIL refuses images above "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels"
        )
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image PIL can read (empty, truncated at the start, or another kind of file)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def read_text_file(path: Path, what: str, hint: str = "") -> str:
    """The UTF-8 text of a file the user hands in; a folder, an unreadable or non-UTF-8 file is a DataError."""
    if path.is_dir():
        raise DataError(f"{what} {path} is a folder, not a file")
    try:
        return path.read_bytes().decode("utf-8-sig")  # -sig: spreadsheets and editors may start UTF-8 with a BOM
    except FileNotFoundError:
        raise DataError(f"{what} {path} not found{hint}") from None
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{what} {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line}); save it as UTF-8 "
            "(in a spreadsheet: 'CSV UTF-8')"
        ) from None


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
