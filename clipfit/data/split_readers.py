"""Readers of the benchmarks that come with a split: CoOp's split files and FGVC-Aircraft's own.

Nine of the 11 benchmarks are read from CoOp's published split files (``split_zhou_*.json``) exactly
as CoOp's ``datasets/*.py`` read them, with CoOp's class-name rules (Caltech101 and EuroSAT renames;
SUN397 and StanfordCars name orders and UCF101 word splits for random splits); FGVC-Aircraft is
read from its official ``images_variant_*.txt``. Each reader takes its dataset's record
(:mod:`clipfit.data.catalog`) for the folder, the expected tree its errors show and the template.

Without a split file, ``--make-split`` draws a random split with CoOp's rule for the dataset (the
``split_*`` functions below read the original annotation files). Unlike CoOp, clipfit saves it under
its cache directory, never as ``split_zhou_*.json`` in the dataset folder, and marks results as not
comparable.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from clipfit.data.base import DataError, Dataset, FileReader, LoadOptions, Sample, read_text_file
from clipfit.data.records import (
    DatasetRecord,
    check_first_entries,
    dataset_folder,
    list_files,
    list_subfolders,
    missing,
    require,
)
from clipfit.data.sampling import FEWSHOT_DIR
from clipfit.data.splits import (
    SPLIT_SEED,
    classnames_from_samples,
    dataset_cache_dir,
    read_split_file,
    split_per_class,
    split_trainval,
    write_split_file,
)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- random splits (--make-split)
# (dataset folder, image folder, generator) -> train, val, test
RandomSplit = Callable[[Path, Path, random.Random], tuple[list[Sample], list[Sample], list[Sample]]]

# How --make-split splits, for messages.
FOLDER_RULE = "50% train, 20% val, 30% test of each class folder, as CoOp does"
TRAINVAL_RULE = "the official test set, the official trainval set cut 80/20 per class, as CoOp does"


def split_class_folders(ignored: tuple[str, ...] = ()) -> RandomSplit:
    """CoOp's DTD ``read_and_split_data``: sorted class folders, 50/20/30 of each class."""

    def make(folder: Path, image_dir: Path, rng: random.Random):
        categories = [c for c in list_subfolders(image_dir) if c not in ignored]
        groups = {
            label: [Sample(f"{c}/{im}", label, c) for im in list_files(image_dir / c)]
            for label, c in enumerate(categories)
        }
        return split_per_class(groups, rng, source=str(image_dir))

    return make


def _text_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"--make-split needs {path}")
    lines = read_text_file(path, "annotation file").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def split_pets(folder: Path, image_dir: Path, rng: random.Random):
    """OxfordPets: ``annotations/trainval.txt`` cut 80/20, ``annotations/test.txt``; breeds lower-cased."""

    def read(name: str) -> list[Sample]:
        items = []
        for line in _text_lines(folder / "annotations" / name):
            imname, label = line.split(" ")[:2]
            breed = "_".join(imname.split("_")[:-1]).lower()
            items.append(Sample(f"{imname}.jpg", int(label) - 1, breed))
        return items

    train, val = split_trainval(read("trainval.txt"), rng, source="oxford_pets/annotations/trainval.txt")
    return train, val, read("test.txt")


def _loadmat(path: Path):
    if not path.is_file():
        raise DataError(f"--make-split needs {path}")
    from scipy.io import loadmat  # scipy comes with scikit-learn

    return loadmat(str(path))


def split_cars(folder: Path, image_dir: Path, rng: random.Random):
    """StanfordCars: the devkit's train annotations cut 80/20, the labelled test annotations; year first."""
    meta = _loadmat(folder / "devkit" / "cars_meta.mat")["class_names"][0]

    def read(image_folder: str, anno: Path) -> list[Sample]:
        items = []
        for record in _loadmat(anno)["annotations"][0]:
            label = int(record["class"][0, 0]) - 1
            words = str(meta[label][0]).split(" ")
            classname = " ".join([words[-1], *words[:-1]])  # CoOp puts the year first
            items.append(Sample(f"{image_folder}/{record['fname'][0]}", label, classname))
        return items

    trainval = read("cars_train", folder / "devkit" / "cars_train_annos.mat")
    train, val = split_trainval(trainval, rng, source="stanford_cars/devkit/cars_train_annos.mat")
    return train, val, read("cars_test", folder / "cars_test_annos_withlabels.mat")


def split_flowers(folder: Path, image_dir: Path, rng: random.Random):
    """Flowers102: 50/20/30 of each class of ``imagelabels.mat``, names from ``cat_to_name.json``."""
    labels = _loadmat(folder / "imagelabels.mat")["labels"][0]
    names_file = folder / "cat_to_name.json"
    if not names_file.is_file():
        raise DataError(f"--make-split needs {names_file}")
    try:
        lab2cname = json.loads(read_text_file(names_file, "class-name file"))
        names = {label: str(lab2cname[str(int(label))]) for label in set(labels.tolist())}
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{names_file} does not map every label of imagelabels.mat to a name ({exc!r:.100})") from None
    groups: dict[int, list[Sample]] = {}
    for i, label in enumerate(labels):
        label = int(label)
        groups.setdefault(label - 1, []).append(Sample(f"image_{i + 1:05d}.jpg", label - 1, names[label]))
    return split_per_class(groups, rng, source="oxford_flowers/imagelabels.mat")


def split_sun397(folder: Path, image_dir: Path, rng: random.Random):
    """SUN397: ``Training_01.txt`` cut 80/20, ``Testing_01.txt``; letter folder dropped, last word first."""
    classes = [line[1:] for line in _text_lines(folder / "ClassName.txt")]  # "/a/abbey" -> "a/abbey"
    cname2lab = {c: i for i, c in enumerate(classes)}

    def read(name: str) -> list[Sample]:
        items = []
        for line in _text_lines(folder / name):
            imname = line[1:]
            classname = os.path.dirname(imname)
            words = classname.split("/")[1:][::-1]  # drop the letter folder; "indoor"/"outdoor" first
            items.append(Sample(imname, cname2lab[classname], " ".join(words)))
        return items

    train, val = split_trainval(read("Training_01.txt"), rng, source="sun397/Training_01.txt")
    return train, val, read("Testing_01.txt")


def split_ucf101(folder: Path, image_dir: Path, rng: random.Random):
    """UCF101: ``trainlist01.txt`` cut 80/20, ``testlist01.txt``; CamelCase actions split into words."""
    lists = folder / "ucfTrainTestlist"
    cname2lab = {}
    for line in _text_lines(lists / "classInd.txt"):
        label, classname = line.split(" ")
        cname2lab[classname] = int(label) - 1

    def read(name: str) -> list[Sample]:
        items = []
        for line in _text_lines(lists / name):
            action, filename = line.split(" ")[0].split("/")
            renamed = "_".join(re.findall("[A-Z][^A-Z]*", action))
            items.append(Sample(f"{renamed}/{filename.replace('.avi', '.jpg')}", cname2lab[action], renamed))
        return items

    train, val = split_trainval(read("trainlist01.txt"), rng, source="ucf101/ucfTrainTestlist/trainlist01.txt")
    return train, val, read("testlist01.txt")


def _renamer(renames: dict[str, str]) -> Callable[[Sample], Sample]:
    def rename(sample: Sample) -> Sample:
        new = renames.get(sample.classname)
        return replace(sample, classname=new) if new else sample

    return rename


# ---------------------------------------------------------------------------- split-file benchmarks
@dataclass(frozen=True)
class SplitFileReader:
    """A benchmark read from a CoOp split file (``split_zhou_*.json``)."""

    image_dir: str  # image folder inside the dataset folder ("" = the dataset folder itself)
    split_file: str  # CoOp's split file in the dataset folder
    make_random: RandomSplit  # --make-split's random split, from the original annotation files
    random_rule: str  # how --make-split splits, for messages
    renames: dict[str, str] | None = None  # CoOp's class renames, applied to split-file names

    def __call__(self, record: DatasetRecord, root: Path | None, options: LoadOptions) -> Dataset:
        folder = dataset_folder(record, root)
        image_dir = folder / self.image_dir if self.image_dir else folder
        split_path = folder / self.split_file
        own = dataset_cache_dir(record.name, folder)
        if split_path.exists() and not split_path.is_file():
            raise DataError(f"split file {split_path} is a folder, not a file")
        if split_path.is_file():
            splits = read_split_file(split_path)
            source, comparable = self.split_file, True
            fewshot_dir, fallback = folder / FEWSHOT_DIR, own / FEWSHOT_DIR
        elif options.make_split:
            require(record, root, image_dir, "image folder")
            splits, saved = self._random_split(record.name, folder, image_dir, own / "random_split")
            source, comparable = f"random split (--make-split) {saved}", False
            fewshot_dir, fallback = saved.parent / FEWSHOT_DIR, None
        else:
            raise missing(
                record,
                root,
                f"split file {split_path} not found. It is CoOp's published split of {record.title} (see below); "
                "results are comparable with the literature only on it. Without it, pass --make-split to draw a "
                f"random split ({self.random_rule}), saved under clipfit's cache directory; such results are marked "
                '"comparable": false in results.json.',
            )
        require(record, root, image_dir, "image folder")
        if self.renames:
            rename = _renamer(self.renames)
            splits = {k: [rename(s) for s in v] for k, v in splits.items()}
        check_first_entries(record, root, image_dir, splits, source)
        classnames = classnames_from_samples(
            [*splits["train"], *splits["val"], *splits["test"]], f"split file {split_path}" if comparable else source
        )
        return Dataset(
            name=record.name,
            classnames=classnames,
            template=record.template,
            train=splits["train"],
            val=splits["val"],
            test=splits["test"],
            reader=FileReader(image_dir),
            split_source=source,
            comparable=comparable,
            fewshot_dir=fewshot_dir,
            fewshot_fallback=fallback,
        )

    def _random_split(
        self, name: str, folder: Path, image_dir: Path, own: Path
    ) -> tuple[dict[str, list[Sample]], Path]:
        saved = own / "split.json"
        if saved.is_file():
            logger.warning(
                "%s: using the random split saved at %s (not comparable with published numbers)", name, saved
            )
            return read_split_file(saved), saved
        train, val, test = self.make_random(folder, image_dir, random.Random(SPLIT_SEED))
        if self.renames:  # saved with the final names, as CoOp's split files are
            rename = _renamer(self.renames)
            train, val, test = ([rename(s) for s in items] for items in (train, val, test))
        write_split_file(saved, {"train": train, "val": val, "test": test})
        logger.warning(
            "%s: no published split file; drew a random split (%s), saved at %s. Results are marked not comparable.",
            name,
            self.random_rule,
            saved,
        )
        return {"train": train, "val": val, "test": test}, saved


# ---------------------------------------------------------------------------- FGVC-Aircraft
def read_fgvc_aircraft(record: DatasetRecord, root: Path | None, options: LoadOptions) -> Dataset:
    """The official split: ``variants.txt`` (label order) and ``images_variant_{train,val,test}.txt``."""
    folder = dataset_folder(record, root)
    image_dir = require(record, root, folder / "images", "image folder")
    variants_file = require(record, root, folder / "variants.txt")
    classnames = [line.strip() for line in read_text_file(variants_file, "class list").splitlines() if line.strip()]
    cname2lab = {c: i for i, c in enumerate(classnames)}
    splits = {}
    for split in ("train", "val", "test"):
        path = require(record, root, folder / f"images_variant_{split}.txt")
        items = []
        for number, line in enumerate(read_text_file(path, "split list").splitlines(), 1):
            if not line.strip():
                continue
            imname, _, variant = line.strip().partition(" ")
            if variant not in cname2lab:
                raise DataError(f"{path} line {number}: variant {variant!r} is not in {variants_file}")
            items.append(Sample(f"{imname}.jpg", cname2lab[variant], variant))
        splits[split] = items
    check_first_entries(record, root, image_dir, splits, "images_variant_*.txt")
    return Dataset(
        name=record.name,
        classnames=classnames,
        template=record.template,
        reader=FileReader(image_dir),
        split_source="images_variant_{train,val,test}.txt (official split)",
        fewshot_dir=folder / FEWSHOT_DIR,
        fewshot_fallback=dataset_cache_dir(record.name, folder) / FEWSHOT_DIR,
        **splits,
    )
