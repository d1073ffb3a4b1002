"""Readers of ImageNet and its 4 variants (PAPER.md section 5), and ImageNet's class names.

Read as CoOp's ``datasets/imagenet*.py`` read them, with these departures, on purpose:

* image folders are listed in sorted order (CoOp lists ImageNet's class folders with
  ``os.listdir``, so its ImageNet few-shot subsets depend on the file system);
* ImageNet and its variants take their class names from ``classnames.txt`` when present and
  from open_clip's ``IMAGENET_CLASSNAMES`` (the same CLIP names) otherwise;
* ImageNet-A and -R are labelled 0..199 over their fixed 200-class subsets (on the complete
  datasets this equals CoOp's labels over the sorted folders).

Each reader takes its dataset's record (:mod:`clipfit.data.catalog`) for the folder, the expected
tree its errors show and the template.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from clipfit.data.base import DataError, Dataset, FileReader, LoadOptions, Sample, read_text_file
from clipfit.data.records import DatasetRecord, dataset_folder, list_files, list_subfolders, missing, require
from clipfit.data.sampling import FEWSHOT_DIR
from clipfit.data.splits import dataset_cache_dir


# ---------------------------------------------------------------------------- ImageNet class names
@cache
def _wnids(name: str) -> tuple[str, ...]:
    text = resources.files("clipfit.data").joinpath("info", name).read_text(encoding="utf-8")
    return tuple(text.split())


def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k wnids in label order (sorted; from hendrycks/imagenet-r eval.py)."""
    return _wnids("imagenet_wnids.txt")


def imagenet_a_wnids() -> tuple[str, ...]:
    """ImageNet-A's 200 wnids, sorted (hendrycks/natural-adv-examples)."""
    return _wnids("imagenet_a_wnids.txt")


def imagenet_r_wnids() -> tuple[str, ...]:
    """ImageNet-R's 200 wnids, sorted (hendrycks/imagenet-r)."""
    return _wnids("imagenet_r_wnids.txt")


def read_classnames_txt(path: Path) -> dict[str, str]:
    """CoOp's ``classnames.txt``: ``<wnid> <class name>`` lines, in file order."""
    names: dict[str, str] = {}
    for number, line in enumerate(read_text_file(path, "class-name file").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        wnid, _, name = line.partition(" ")
        if not name.strip():
            raise DataError(f"{path} line {number}: expected '<wnid> <class name>', got {line!r}")
        names[wnid] = name.strip()
    return names


def imagenet_classnames(folder: Path, wnids: list[str] | tuple[str, ...]) -> tuple[list[str], str]:
    """Names of ``wnids`` from ``folder/classnames.txt``, else open_clip's CLIP ImageNet names."""
    text_file = folder / "classnames.txt"
    if text_file.exists():
        names = read_classnames_txt(text_file)
        missing_names = [w for w in wnids if w not in names]
        if missing_names:
            raise DataError(f"{text_file} has no line for {', '.join(missing_names[:5])} (found in the image folders)")
        return [names[w] for w in wnids], str(text_file)
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    index = {w: i for i, w in enumerate(imagenet_wnids())}
    unknown = [w for w in wnids if w not in index]
    if unknown:
        raise DataError(
            f"folders {', '.join(unknown[:5])} in {folder} are not ImageNet-1k wnids, so open_clip's ImageNet class "
            f"names do not apply; put a classnames.txt ('<folder> <class name>' lines) in {folder}"
        )
    return [IMAGENET_CLASSNAMES[index[w]] for w in wnids], "open_clip IMAGENET_CLASSNAMES"


# ---------------------------------------------------------------------------- readers
def _class_folder_items(base: Path, prefix: str, folders: list[str], labels: dict[str, int], names: list[str]):
    items = []
    for folder in folders:
        label = labels[folder]
        items.extend(Sample(f"{prefix}{folder}/{f}", label, names[label]) for f in list_files(base / folder))
    return items


def read_imagenet(record: DatasetRecord, root: Path | None, options: LoadOptions) -> Dataset:
    """Train = ``images/train``, test = ``images/val``; labels over the sorted wnid folders of train."""
    folder = dataset_folder(record, root)
    images = folder / "images"
    train_dir = require(record, root, images / "train", "training image folder")
    val_dir = require(record, root, images / "val", "validation image folder")
    wnids = list_subfolders(train_dir)
    if not wnids:
        raise missing(record, root, f"{train_dir} holds no class folders")
    val_wnids = list_subfolders(val_dir)
    if not val_wnids:
        raise missing(
            record,
            root,
            f"{val_dir} holds no class folders: the 50,000 validation images must be sorted into the same wnid "
            "folders as train (for example with the valprep.sh script of the PyTorch ImageNet example)",
        )
    unknown = sorted(set(val_wnids) - set(wnids))
    if unknown:
        raise DataError(f"{val_dir} has class folders that {train_dir} lacks: {', '.join(unknown[:5])}")
    names, names_source = imagenet_classnames(folder, wnids)
    labels = {w: i for i, w in enumerate(wnids)}
    return Dataset(
        name=record.name,
        classnames=names,
        template=record.template,
        train=_class_folder_items(train_dir, "train/", wnids, labels, names),
        val=[],  # CoOp evaluates on val and samples few-shot train only
        test=_class_folder_items(val_dir, "val/", val_wnids, labels, names),
        reader=FileReader(images),
        split_source="folders images/train (train), images/val (test), listed sorted",
        fewshot_val=False,
        info={"classnames": names_source},
        fewshot_dir=folder / FEWSHOT_DIR,
        fewshot_fallback=dataset_cache_dir(record.name, folder) / FEWSHOT_DIR,
    )


def _test_only(record: DatasetRecord, names: list[str], test: list[Sample], reader_root: Path, source: str, info: dict):
    return Dataset(
        name=record.name,
        classnames=names,
        template=record.template,
        train=[],
        val=[],
        test=test,
        reader=FileReader(reader_root),
        split_source=source,
        info=info,
    )


def read_imagenetv2(record: DatasetRecord, root: Path | None, options: LoadOptions) -> Dataset:
    """Folders ``0``..``999`` are ImageNet labels; class names in ImageNet label order."""
    folder = dataset_folder(record, root)
    image_dir = require(record, root, folder / "imagenetv2-matched-frequency-format-val", "image folder")
    # label k is ImageNet's k-th class in sorted-wnid order, whatever the order of classnames.txt
    names, source = imagenet_classnames(folder, imagenet_wnids())
    folders = list_subfolders(image_dir)
    bad = [f for f in folders if not (f.isdigit() and int(f) < 1000)]
    if bad:
        raise missing(record, root, f"{image_dir} has folders that are not labels 0..999: {', '.join(bad[:5])}")
    test = []
    for f in sorted(folders, key=int):
        test.extend(Sample(f"{f}/{im}", int(f), names[int(f)]) for im in list_files(image_dir / f))
    return _test_only(record, names, test, image_dir, "folders 0..999 (labels)", {"classnames": source})


def read_imagenet_sketch(record: DatasetRecord, root: Path | None, options: LoadOptions) -> Dataset:
    """Labels over the sorted wnid folders of ``images/`` (as CoOp; all 1,000 in the full dataset)."""
    folder = dataset_folder(record, root)
    image_dir = require(record, root, folder / "images", "image folder")
    wnids = list_subfolders(image_dir)
    if not wnids:
        raise missing(record, root, f"{image_dir} holds no wnid folders")
    names, source = imagenet_classnames(folder, wnids)
    test = _class_folder_items(image_dir, "", wnids, {w: i for i, w in enumerate(wnids)}, names)
    return _test_only(record, names, test, image_dir, "wnid folders of images/", {"classnames": source})


@dataclass(frozen=True)
class WnidSubsetReader:
    """ImageNet-A and -R: wnid folders of a fixed 200-class subset, labelled 0..199 over the subset."""

    image_subdir: str  # the image folder inside the dataset folder
    wnids: Callable[[], tuple[str, ...]]  # the subset's wnids in label order

    def __call__(self, record: DatasetRecord, root: Path | None, options: LoadOptions) -> Dataset:
        folder = dataset_folder(record, root)
        image_dir = require(record, root, folder / self.image_subdir, "image folder")
        subset = self.wnids()
        present = list_subfolders(image_dir)  # files such as README.txt are ignored
        labels = {w: i for i, w in enumerate(subset)}
        foreign = [w for w in present if w not in labels]
        if foreign:
            raise missing(
                record,
                root,
                f"{image_dir} has folders outside the 200 {record.title} classes: {', '.join(foreign[:5])}",
            )
        if not present:
            raise missing(record, root, f"{image_dir} holds no wnid folders")
        names, source = imagenet_classnames(folder, subset)
        test = _class_folder_items(image_dir, "", present, labels, names)
        return _test_only(
            record, names, test, image_dir, f"wnid folders of {self.image_subdir}/", {"classnames": source}
        )
