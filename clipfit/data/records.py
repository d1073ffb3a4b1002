"""One record per dataset: its files, its reader, its prompt and the paper's settings for it.

A :class:`DatasetRecord` is everything clipfit knows about one dataset. :mod:`clipfit.data.catalog`
lists the records, :mod:`clipfit.data.registry` resolves a ``--dataset`` name to one (and builds one
on the fly for ``folder:``/``csv:`` data, with the defaults below), :func:`clipfit.config.resolve`
takes the paper's epochs and few-shot lambda from it, ``clipfit-data fetch`` downloads the files of its
:class:`Download` records (:mod:`clipfit.data.fetch`), and docs/datasets.md is rendered from the records
(:mod:`clipfit.data.docs`).

The helpers below are shared by the benchmark readers: a missing data root, dataset folder or file
is an error that shows the record's expected tree and where its files come from.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from textwrap import indent

from clipfit.data.base import DataError, Dataset, LoadOptions, Sample

COOP_DATASETS_MD = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"

# What a dataset without its own values gets (CoOp's default prompt, PAPER.md section 3's epochs and
# few-shot lambda); folder:/csv: data always does.
DEFAULT_TEMPLATE = "a photo of a {}."
DEFAULT_EPOCHS = 100
DEFAULT_FEWSHOT_REG_WEIGHT = 2.0
DEFAULT_MODEL = ("ViT-B-16", "openai")  # the benchmarks' model: CLIP ViT-B/16 with OpenAI's weights

# (this dataset's record, data root or None, load options) -> the dataset's class names and splits
Reader = Callable[["DatasetRecord", "Path | None", LoadOptions], Dataset]


@dataclass(frozen=True)
class Download:
    """One file of a dataset that ``clipfit-data fetch`` downloads: where it is published, the checksum published
    with it, and where its contents go in the dataset folder (the layout of CoOp's DATASETS.md)."""

    url: str  # where it is published (a --mirror serves it as <mirror>/<dataset>/<filename>)
    filename: str  # the downloaded file's name
    sha256: str = ""  # as published ("" when none is); a file that differs is refused before it is used
    md5: str = ""  # as published ("" when none is)
    checksum_source: str = ""  # who published the checksums (torchvision, tensorflow_datasets)
    size: int | None = None  # bytes, as published (None: unknown): the progress bar and the free-space check
    # what goes where: (member of the archive, path in the dataset folder) pairs, "dir/" for a folder and all
    # in it, "dir/file" for one file; members no pair names are left out. Empty: the file is no archive and
    # goes into the dataset folder as it is, under its filename
    extract: tuple[tuple[str, str], ...] = ()
    inner: str = ""  # an archive inside the archive, unpacked instead of it (Caltech101's zip holds a .tar.gz)
    page: str = ""  # where a person downloads it by hand when a script cannot (Google Drive's page); "" = url

    @property
    def outputs(self) -> tuple[str, ...]:
        """The paths, relative to the dataset folder, this download creates: it is done when they all exist."""
        if not self.extract:
            return (self.filename,)
        return tuple(dict.fromkeys(dest.rstrip("/") for _, dest in self.extract))


@dataclass(frozen=True)
class DatasetRecord:
    """Everything clipfit knows about one dataset; adding a dataset is adding one of these."""

    name: str  # registry name: --dataset NAME, "dataset" in results.json, the run folder
    title: str  # the dataset's usual name, in messages and docs
    reader: Reader  # reads the class names and splits (images are read later, lazily)
    template: str = DEFAULT_TEMPLATE  # prompt template with one {} (CoOp's template for the benchmarks)
    # the template of the published zero-shot numbers (CoOp's ZeroshotCLIP) where it differs; None: the same
    zeroshot_template: str | None = None
    epochs: int = DEFAULT_EPOCHS  # the paper's training epochs
    fewshot_reg_weight: float = DEFAULT_FEWSHOT_REG_WEIGHT  # the paper's lambda in few-shot learning
    model: tuple[str, str] = DEFAULT_MODEL  # default (open_clip architecture, pretrained source)
    setting: str = "base2new"  # the default protocol: base-to-new (the paper's), fewshot for your own images
    val_every: int = 0  # validation accuracy every N epochs by default (0: none, as in the paper's runs)
    folder: str = ""  # dataset folder under --data-root; "" when there is none (generated, folder:/csv:)
    tree: str = ""  # the expected tree of that folder (errors and docs/datasets.md)
    sources: str = ""  # where each of its files comes from, one file (group) per line
    group: str = ""  # the --datasets group that lists it ("all", "imagenet-variants"); "" for none
    test_only: bool = False  # evaluation only (the ImageNet variants)
    needs_root: bool = True  # False for generated datasets and folder:/csv: data
    description: str = ""  # one line for listings; "" for one made of the title and folder
    downloads: tuple[Download, ...] = ()  # what clipfit-data fetch downloads (its published files)
    by_hand: str = ""  # what must be fetched by hand for the published protocol, and how ("" when nothing)

    def __post_init__(self) -> None:
        if not self.description and self.folder:
            object.__setattr__(self, "description", f"{self.title} ({self.folder}/ under --data-root)")

    def load(self, root: Path | None, options: LoadOptions | None = None) -> Dataset:
        """The dataset under ``root`` (the data root; None for data that needs none)."""
        return self.reader(self, root, options or LoadOptions())

    def describe(self, root: Path | None = None) -> str:
        """The expected tree and file sources, as errors show them."""
        where = f"under the data root ({root})" if root is not None else "under the data root"
        return (
            f"Expected layout of {self.title} {where}:\n{indent(self.tree, '    ')}\n"
            f"Where the files come from:\n{indent(self.sources, '    ')}\n"
            f"(all datasets: README 'Datasets' and {COOP_DATASETS_MD})"
        )


# ---------------------------------------------------------------------------- layout checks of the readers
def missing(record: DatasetRecord, root: Path | None, problem: str) -> DataError:
    """``problem`` followed by the record's expected tree and file sources."""
    return DataError(f"{problem}\n{record.describe(root)}")


def dataset_folder(record: DatasetRecord, root: Path | None) -> Path:
    """``root / record.folder``; a missing root or folder is an error that shows the expected tree."""
    if root is None:
        raise missing(
            record, None, f"dataset '{record.name}' needs --data-root (the folder that holds {record.folder}/)"
        )
    if not root.is_dir():
        raise missing(record, root, f"data root {root} does not exist")
    folder = root / record.folder
    if not folder.is_dir():
        raise missing(record, root, f"dataset folder {folder} not found")
    return folder


def require(record: DatasetRecord, root: Path | None, path: Path, what: str = "") -> Path:
    """``path`` if it exists, else an error naming it (``what`` it is) with the expected tree."""
    if not path.exists():
        raise missing(record, root, f"{what or 'expected'} {path} not found")
    return path


def check_first_entries(
    record: DatasetRecord, root: Path | None, image_dir: Path, splits: dict[str, list[Sample]], source: str
) -> None:
    """A split file whose first images are missing points at a wrong layout: say so before training."""
    for key in ("train", "test"):
        if splits.get(key):
            path = image_dir / splits[key][0].path
            if not path.is_file():
                raise missing(
                    record, root, f"{source} lists {splits[key][0].path!r} in '{key}', but {path} does not exist"
                )


def list_files(folder: Path) -> list[str]:
    """Names of the files in ``folder``, hidden ones left out, sorted (CoOp lists some unsorted)."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_file())


def list_subfolders(folder: Path) -> list[str]:
    """Names of the sub-folders of ``folder``, hidden ones left out, sorted."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())
