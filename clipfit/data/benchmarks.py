"""Readers of the 11 CoOp benchmarks and the 4 ImageNet variants (PAPER.md section 5).

Each dataset lives in its own folder under one data root, in the layout of CoOp's DATASETS.md,
and is read exactly as CoOp's ``datasets/*.py`` read it: the published split files
(``split_zhou_*.json``; FGVC-Aircraft's official ``images_variant_*.txt``), CoOp's class-name
rules (Caltech101 and EuroSAT renames, SUN397 and StanfordCars name orders, UCF101 word splits)
and the per-dataset prompt template. Where clipfit departs from CoOp, on purpose:

* image folders are listed in sorted order (CoOp lists ImageNet's class folders with
  ``os.listdir``, so its ImageNet few-shot subsets depend on the file system);
* ImageNet and its variants take their class names from ``classnames.txt`` when present and
  from open_clip's ``IMAGENET_CLASSNAMES`` (the same CLIP names) otherwise;
* ImageNet-A and -R are labelled 0..199 over their fixed 200-class subsets (on the complete
  datasets this equals CoOp's labels over the sorted folders);
* a random split (``--make-split``, when a split file is missing) is saved under clipfit's cache
  directory, never as ``split_zhou_*.json`` in the dataset folder, and marks results as not
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
from functools import cache
from importlib import resources
from pathlib import Path
from textwrap import indent

from clipfit.data.base import DataError, Dataset, FileReader, LoadOptions, Sample
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
from clipfit.prompts import template_for

logger = logging.getLogger(__name__)

COOP_DATASETS_MD = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"


@dataclass(frozen=True)
class Layout:
    """Where a benchmark's files live and where they come from (README and error messages)."""

    name: str  # registry name
    title: str  # the dataset's usual name
    folder: str  # the dataset folder under the data root
    tree: str  # the expected tree of the dataset folder
    sources: str  # where each file comes from
    test_only: bool = False

    def describe(self, root: Path | None = None) -> str:
        where = f"under the data root ({root})" if root is not None else "under the data root"
        return (
            f"Expected layout of {self.title} {where}:\n{indent(self.tree, '    ')}\n"
            f"Where the files come from:\n{indent(self.sources, '    ')}\n"
            f"(all datasets: README 'Datasets' and {COOP_DATASETS_MD})"
        )


def _drive(file_id: str) -> str:
    return f"https://drive.google.com/file/d/{file_id}/view?usp=sharing"


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout(
            "imagenet",
            "ImageNet",
            "imagenet",
            "imagenet/\n"
            "|-- images/\n"
            "|   |-- train/        1,000 wnid folders: n01440764/n01440764_10026.JPEG, ...\n"
            "|   `-- val/          the same 1,000 wnid folders (val images sorted into them)\n"
            "`-- classnames.txt    optional: 'n01440764 tench' lines (else open_clip's CLIP names)",
            "images: https://image-net.org (ILSVRC-2012 train and val; val sorted into wnid folders)\n"
            f"classnames.txt: CoOp, {_drive('1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF')}\n"
            "split: the folders (train = images/train, test = images/val); no split file",
        ),
        Layout(
            "caltech101",
            "Caltech101",
            "caltech-101",
            "caltech-101/\n"
            "|-- 101_ObjectCategories/   accordion/image_0001.jpg, airplanes/, ...\n"
            "`-- split_zhou_Caltech101.json",
            "images: 101_ObjectCategories.tar.gz from https://data.caltech.edu/records/mzrjq-6wc02\n"
            f"split_zhou_Caltech101.json: CoOp, {_drive('1hyarUivQE36mY6jSomru6Fjd-JzwcCzN')}",
        ),
        Layout(
            "oxford_pets",
            "OxfordPets",
            "oxford_pets",
            "oxford_pets/\n"
            "|-- images/          Abyssinian_1.jpg, ...\n"
            "|-- annotations/     trainval.txt, test.txt (only needed for --make-split)\n"
            "`-- split_zhou_OxfordPets.json",
            "images, annotations: https://www.robots.ox.ac.uk/~vgg/data/pets/ (images.tar.gz, annotations.tar.gz)\n"
            f"split_zhou_OxfordPets.json: CoOp, {_drive('1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs')}",
        ),
        Layout(
            "stanford_cars",
            "StanfordCars",
            "stanford_cars",
            "stanford_cars/\n"
            "|-- cars_train/      00001.jpg, ...\n"
            "|-- cars_test/       00001.jpg, ...\n"
            "|-- devkit/          cars_train_annos.mat, cars_meta.mat (only needed for --make-split)\n"
            "|-- cars_test_annos_withlabels.mat   (only needed for --make-split)\n"
            "`-- split_zhou_StanfordCars.json     (paths relative to stanford_cars/)",
            "images, devkit: http://ai.stanford.edu/~jkrause/cars/car_dataset.html (cars_train.tgz, cars_test.tgz,\n"
            "  car_devkit.tgz, cars_test_annos_withlabels.mat)\n"
            f"split_zhou_StanfordCars.json: CoOp, {_drive('1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT')}",
        ),
        Layout(
            "oxford_flowers",
            "Flowers102",
            "oxford_flowers",
            "oxford_flowers/\n"
            "|-- jpg/                 image_00001.jpg, ...\n"
            "|-- imagelabels.mat      (only needed for --make-split)\n"
            "|-- cat_to_name.json     (only needed for --make-split)\n"
            "`-- split_zhou_OxfordFlowers.json",
            "images, imagelabels.mat: https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (102flowers.tgz)\n"
            f"cat_to_name.json: CoOp, {_drive('1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0')}\n"
            f"split_zhou_OxfordFlowers.json: CoOp, {_drive('1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT')}",
        ),
        Layout(
            "food101",
            "Food101",
            "food-101",
            "food-101/\n|-- images/          apple_pie/1005649.jpg, ...\n`-- split_zhou_Food101.json",
            "images: food-101.tar.gz from https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/\n"
            f"split_zhou_Food101.json: CoOp, {_drive('1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl')}",
        ),
        Layout(
            "fgvc_aircraft",
            "FGVCAircraft",
            "fgvc_aircraft",
            "fgvc_aircraft/       the data/ folder of fgvc-aircraft-2013b, renamed\n"
            "|-- images/          0034309.jpg, ...\n"
            "|-- variants.txt     one variant (class) per line, label order\n"
            "|-- images_variant_train.txt   '<image id> <variant>' lines\n"
            "|-- images_variant_val.txt\n"
            "`-- images_variant_test.txt",
            "all files: fgvc-aircraft-2013b.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/\n"
            "  (keep data/ and rename it fgvc_aircraft/); the split is the official one, no split file",
        ),
        Layout(
            "sun397",
            "SUN397",
            "sun397",
            "sun397/\n"
            "|-- SUN397/          a/abbey/sun_aaalbzqrimafwbiv.jpg, ...\n"
            "|-- ClassName.txt, Training_01.txt, Testing_01.txt   (only needed for --make-split)\n"
            "`-- split_zhou_SUN397.json",
            "images: SUN397.tar.gz from https://vision.princeton.edu/projects/2010/SUN/\n"
            "partitions: Partitions.zip from the same page\n"
            f"split_zhou_SUN397.json: CoOp, {_drive('1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq')}",
        ),
        Layout(
            "dtd",
            "DTD",
            "dtd",
            "dtd/\n|-- images/          banded/banded_0002.jpg, ...\n`-- split_zhou_DescribableTextures.json",
            "images: dtd-r1.0.1.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/dtd/\n"
            f"split_zhou_DescribableTextures.json: CoOp, {_drive('1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x')}",
        ),
        Layout(
            "eurosat",
            "EuroSAT",
            "eurosat",
            "eurosat/\n"
            "|-- 2750/            AnnualCrop/AnnualCrop_1.jpg, Forest/, ... (10 class folders)\n"
            "`-- split_zhou_EuroSAT.json",
            "images: EuroSAT.zip (RGB) from https://github.com/phelber/EuroSAT\n"
            f"split_zhou_EuroSAT.json: CoOp, {_drive('1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o')}",
        ),
        Layout(
            "ucf101",
            "UCF101",
            "ucf101",
            "ucf101/\n"
            "|-- UCF-101-midframes/   Apply_Eye_Makeup/v_ApplyEyeMakeup_g01_c01.jpg, ...\n"
            "|-- ucfTrainTestlist/    classInd.txt, trainlist01.txt, testlist01.txt (only for --make-split)\n"
            "`-- split_zhou_UCF101.json",
            f"middle frames: UCF-101-midframes.zip from CoOp, {_drive('10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O')}\n"
            "ucfTrainTestlist: https://www.crcv.ucf.edu/data/UCF101.php\n"
            f"split_zhou_UCF101.json: CoOp, {_drive('1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y')}",
        ),
        Layout(
            "imagenetv2",
            "ImageNetV2 (matched frequency)",
            "imagenetv2",
            "imagenetv2/\n"
            "|-- imagenetv2-matched-frequency-format-val/   0/, 1/, ..., 999/ (folder = ImageNet label)\n"
            "`-- classnames.txt   optional (a copy of imagenet/classnames.txt)",
            "images: imagenetv2-matched-frequency.tar.gz from https://github.com/modestyachts/ImageNetV2\n"
            "classnames.txt: copy imagenet/classnames.txt; test only",
            test_only=True,
        ),
        Layout(
            "imagenet_sketch",
            "ImageNet-Sketch",
            "imagenet-sketch",
            "imagenet-sketch/\n"
            "|-- images/          1,000 wnid folders: n01440764/sketch_0.JPEG, ...\n"
            "`-- classnames.txt   optional (a copy of imagenet/classnames.txt)",
            "images: https://github.com/HaohanWang/ImageNet-Sketch (extract so that images/ holds the wnid folders)\n"
            "classnames.txt: copy imagenet/classnames.txt; test only",
            test_only=True,
        ),
        Layout(
            "imagenet_a",
            "ImageNet-A",
            "imagenet-adversarial",
            "imagenet-adversarial/\n"
            "|-- imagenet-a/      200 wnid folders: n01498041/0.000116_digital clock _ digital clock_0.865662.jpg,"
            " ...\n"
            "|                    (README.txt is ignored)\n"
            "`-- classnames.txt   optional (a copy of imagenet/classnames.txt)",
            "images: imagenet-a.tar from https://github.com/hendrycks/natural-adv-examples\n"
            "classnames.txt: copy imagenet/classnames.txt; test only, labels 0..199 over its 200 classes",
            test_only=True,
        ),
        Layout(
            "imagenet_r",
            "ImageNet-R",
            "imagenet-rendition",
            "imagenet-rendition/\n"
            "|-- imagenet-r/      200 wnid folders: n01443537/art_0.jpg, ...\n"
            "`-- classnames.txt   optional (a copy of imagenet/classnames.txt)",
            "images: imagenet-r.tar from https://github.com/hendrycks/imagenet-r\n"
            "classnames.txt: copy imagenet/classnames.txt; test only, labels 0..199 over its 200 classes",
            test_only=True,
        ),
    )
}

# The 11 benchmarks of base-to-new, few-shot and cross-dataset transfer, in the papers' table order.
BENCHMARKS = (
    "imagenet",
    "caltech101",
    "oxford_pets",
    "stanford_cars",
    "oxford_flowers",
    "food101",
    "fgvc_aircraft",
    "sun397",
    "dtd",
    "eurosat",
    "ucf101",
)
IMAGENET_VARIANTS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")

CALTECH_IGNORED = ("BACKGROUND_Google", "Faces_easy")
CALTECH_RENAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
EUROSAT_RENAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


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
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
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
    if text_file.is_file():
        names = read_classnames_txt(text_file)
        missing = [w for w in wnids if w not in names]
        if missing:
            raise DataError(f"{text_file} has no line for {', '.join(missing[:5])} (found in the image folders)")
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


# ---------------------------------------------------------------------------- helpers
def _missing(layout: Layout, root: Path | None, problem: str) -> DataError:
    return DataError(f"{problem}\n{layout.describe(root)}")


def dataset_folder(layout: Layout, root: Path | None) -> Path:
    """``root / layout.folder``; a missing root or folder is an error that shows the expected tree."""
    if root is None:
        raise _missing(
            layout, None, f"dataset '{layout.name}' needs --data-root (the folder that holds {layout.folder}/)"
        )
    if not root.is_dir():
        raise _missing(layout, root, f"data root {root} does not exist")
    folder = root / layout.folder
    if not folder.is_dir():
        raise _missing(layout, root, f"dataset folder {folder} not found")
    return folder


def _require(layout: Layout, root: Path, path: Path, what: str = "") -> Path:
    if not path.exists():
        raise _missing(layout, root, f"{what or 'expected'} {path} not found")
    return path


def listdir_nohidden(path: Path) -> list[str]:
    """Sorted entry names without hidden ones (Dassl's ``listdir_nohidden``, sorted)."""
    return sorted(name for name in os.listdir(path) if not name.startswith("."))


def _files(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_file())


def _subfolders(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())


def _check_first_entries(layout: Layout, root: Path, image_dir: Path, splits: dict[str, list[Sample]], source: str):
    """A split file whose first images are missing points at a wrong layout: say so before training."""
    for key in ("train", "test"):
        if splits.get(key):
            path = image_dir / splits[key][0].path
            if not path.is_file():
                raise _missing(
                    layout, root, f"{source} lists {splits[key][0].path!r} in '{key}', but {path} does not exist"
                )


def _renamer(renames: dict[str, str]) -> Callable[[Sample], Sample]:
    def rename(sample: Sample) -> Sample:
        new = renames.get(sample.classname)
        return replace(sample, classname=new) if new else sample

    return rename


# ---------------------------------------------------------------------------- random splits (--make-split)
RandomSplit = Callable[[Path, Path, random.Random], tuple[list[Sample], list[Sample], list[Sample]]]


def _split_class_folders(ignored: tuple[str, ...] = ()) -> RandomSplit:
    """CoOp's DTD ``read_and_split_data``: sorted class folders, 50/20/30 of each class."""

    def make(folder: Path, image_dir: Path, rng: random.Random):
        categories = [c for c in _subfolders(image_dir) if c not in ignored]
        groups = {
            label: [Sample(f"{c}/{im}", label, c) for im in _files(image_dir / c)] for label, c in enumerate(categories)
        }
        return split_per_class(groups, rng, source=str(image_dir))

    return make


def _text_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"--make-split needs {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _split_pets(folder: Path, image_dir: Path, rng: random.Random):
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


def _split_cars(folder: Path, image_dir: Path, rng: random.Random):
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


def _split_flowers(folder: Path, image_dir: Path, rng: random.Random):
    labels = _loadmat(folder / "imagelabels.mat")["labels"][0]
    names_file = folder / "cat_to_name.json"
    if not names_file.is_file():
        raise DataError(f"--make-split needs {names_file}")
    lab2cname = json.loads(names_file.read_text(encoding="utf-8"))
    groups: dict[int, list[Sample]] = {}
    for i, label in enumerate(labels):
        label = int(label)
        groups.setdefault(label - 1, []).append(Sample(f"image_{i + 1:05d}.jpg", label - 1, lab2cname[str(label)]))
    return split_per_class(groups, rng, source="oxford_flowers/imagelabels.mat")


def _split_sun397(folder: Path, image_dir: Path, rng: random.Random):
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


def _split_ucf101(folder: Path, image_dir: Path, rng: random.Random):
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


# ---------------------------------------------------------------------------- split-file benchmarks
@dataclass(frozen=True)
class SplitBenchmark:
    """A benchmark read from a CoOp split file (``split_zhou_*.json``)."""

    name: str
    image_dir: str  # image folder inside the dataset folder ("" = the dataset folder itself)
    split_file: str
    make_random: RandomSplit
    random_rule: str  # how --make-split splits, for messages
    renames: dict[str, str] | None = None

    def load(self, root: Path | None, options: LoadOptions) -> Dataset:
        layout = LAYOUTS[self.name]
        folder = dataset_folder(layout, root)
        image_dir = folder / self.image_dir if self.image_dir else folder
        split_path = folder / self.split_file
        own = dataset_cache_dir(self.name, folder)
        if split_path.is_file():
            splits = read_split_file(split_path)
            source, comparable = self.split_file, True
            fewshot_dir, fallback = folder / FEWSHOT_DIR, own / FEWSHOT_DIR
        elif options.make_split:
            _require(layout, root, image_dir, "image folder")
            splits, saved = self._random_split(folder, image_dir, own / "random_split")
            source, comparable = f"random split (--make-split) {saved}", False
            fewshot_dir, fallback = saved.parent / FEWSHOT_DIR, None
        else:
            raise _missing(
                layout,
                root,
                f"split file {split_path} not found. It is CoOp's published split of {layout.title} (see below); "
                "results are comparable with the literature only on it. Without it, pass --make-split to draw a "
                f"random split ({self.random_rule}), saved under clipfit's cache directory; such results are marked "
                '"comparable": false in results.json.',
            )
        _require(layout, root, image_dir, "image folder")
        if self.renames:
            rename = _renamer(self.renames)
            splits = {k: [rename(s) for s in v] for k, v in splits.items()}
        _check_first_entries(layout, root, image_dir, splits, source)
        classnames = classnames_from_samples(
            [*splits["train"], *splits["val"], *splits["test"]], f"split file {split_path}" if comparable else source
        )
        return Dataset(
            name=self.name,
            classnames=classnames,
            template=template_for(self.name),
            train=splits["train"],
            val=splits["val"],
            test=splits["test"],
            reader=FileReader(image_dir),
            split_source=source,
            comparable=comparable,
            fewshot_dir=fewshot_dir,
            fewshot_fallback=fallback,
        )

    def _random_split(self, folder: Path, image_dir: Path, own: Path) -> tuple[dict[str, list[Sample]], Path]:
        saved = own / "split.json"
        if saved.is_file():
            logger.warning(
                "%s: using the random split saved at %s (not comparable with published numbers)", self.name, saved
            )
            return read_split_file(saved), saved
        train, val, test = self.make_random(folder, image_dir, random.Random(SPLIT_SEED))
        if self.renames:  # saved with the final names, as CoOp's split files are
            rename = _renamer(self.renames)
            train, val, test = ([rename(s) for s in items] for items in (train, val, test))
        write_split_file(saved, {"train": train, "val": val, "test": test})
        logger.warning(
            "%s: no published split file; drew a random split (%s), saved at %s. Results are marked not comparable.",
            self.name,
            self.random_rule,
            saved,
        )
        return {"train": train, "val": val, "test": test}, saved


_FOLDER_RULE = "50% train, 20% val, 30% test of each class folder, as CoOp does"
_TRAINVAL_RULE = "the official test set, the official trainval set cut 80/20 per class, as CoOp does"

SPLIT_BENCHMARKS: dict[str, SplitBenchmark] = {
    b.name: b
    for b in (
        SplitBenchmark(
            "caltech101",
            "101_ObjectCategories",
            "split_zhou_Caltech101.json",
            _split_class_folders(CALTECH_IGNORED),
            _FOLDER_RULE + ", without BACKGROUND_Google and Faces_easy",
            CALTECH_RENAMES,
        ),
        SplitBenchmark("oxford_pets", "images", "split_zhou_OxfordPets.json", _split_pets, _TRAINVAL_RULE),
        SplitBenchmark("stanford_cars", "", "split_zhou_StanfordCars.json", _split_cars, _TRAINVAL_RULE),
        SplitBenchmark(
            "oxford_flowers",
            "jpg",
            "split_zhou_OxfordFlowers.json",
            _split_flowers,
            "50% train, 20% val, 30% test of each class of imagelabels.mat, as CoOp does",
        ),
        SplitBenchmark("food101", "images", "split_zhou_Food101.json", _split_class_folders(), _FOLDER_RULE),
        SplitBenchmark("sun397", "SUN397", "split_zhou_SUN397.json", _split_sun397, _TRAINVAL_RULE),
        SplitBenchmark("dtd", "images", "split_zhou_DescribableTextures.json", _split_class_folders(), _FOLDER_RULE),
        SplitBenchmark(
            "eurosat", "2750", "split_zhou_EuroSAT.json", _split_class_folders(), _FOLDER_RULE, EUROSAT_RENAMES
        ),
        SplitBenchmark("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", _split_ucf101, _TRAINVAL_RULE),
    )
}


# ---------------------------------------------------------------------------- FGVC-Aircraft
def load_fgvc_aircraft(root: Path | None, options: LoadOptions) -> Dataset:
    """The official split: ``variants.txt`` (label order) and ``images_variant_{train,val,test}.txt``."""
    layout = LAYOUTS["fgvc_aircraft"]
    folder = dataset_folder(layout, root)
    image_dir = _require(layout, root, folder / "images", "image folder")
    variants_file = _require(layout, root, folder / "variants.txt")
    classnames = [line.strip() for line in variants_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    cname2lab = {c: i for i, c in enumerate(classnames)}
    splits = {}
    for split in ("train", "val", "test"):
        path = _require(layout, root, folder / f"images_variant_{split}.txt")
        items = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            imname, _, variant = line.strip().partition(" ")
            if variant not in cname2lab:
                raise DataError(f"{path} line {number}: variant {variant!r} is not in {variants_file}")
            items.append(Sample(f"{imname}.jpg", cname2lab[variant], variant))
        splits[split] = items
    _check_first_entries(layout, root, image_dir, splits, "images_variant_*.txt")
    return Dataset(
        name="fgvc_aircraft",
        classnames=classnames,
        template=template_for("fgvc_aircraft"),
        reader=FileReader(image_dir),
        split_source="images_variant_{train,val,test}.txt (official split)",
        fewshot_dir=folder / FEWSHOT_DIR,
        fewshot_fallback=dataset_cache_dir("fgvc_aircraft", folder) / FEWSHOT_DIR,
        **splits,
    )


# ---------------------------------------------------------------------------- ImageNet and its variants
def _class_folder_items(base: Path, prefix: str, folders: list[str], labels: dict[str, int], names: list[str]):
    items = []
    for folder in folders:
        label = labels[folder]
        items.extend(Sample(f"{prefix}{folder}/{f}", label, names[label]) for f in _files(base / folder))
    return items


def load_imagenet(root: Path | None, options: LoadOptions) -> Dataset:
    """Train = ``images/train``, test = ``images/val``; labels over the sorted wnid folders of train."""
    layout = LAYOUTS["imagenet"]
    folder = dataset_folder(layout, root)
    images = folder / "images"
    train_dir = _require(layout, root, images / "train", "training image folder")
    val_dir = _require(layout, root, images / "val", "validation image folder")
    wnids = _subfolders(train_dir)
    if not wnids:
        raise _missing(layout, root, f"{train_dir} holds no class folders")
    val_wnids = _subfolders(val_dir)
    if not val_wnids:
        raise _missing(
            layout,
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
        name="imagenet",
        classnames=names,
        template=template_for("imagenet"),
        train=_class_folder_items(train_dir, "train/", wnids, labels, names),
        val=[],  # CoOp evaluates on val and samples few-shot train only
        test=_class_folder_items(val_dir, "val/", val_wnids, labels, names),
        reader=FileReader(images),
        split_source="folders images/train (train), images/val (test), listed sorted",
        fewshot_val=False,
        info={"classnames": names_source},
        fewshot_dir=folder / FEWSHOT_DIR,
        fewshot_fallback=dataset_cache_dir("imagenet", folder) / FEWSHOT_DIR,
    )


def _test_only(name: str, names: list[str], test: list[Sample], reader_root: Path, source: str, info: dict):
    return Dataset(
        name=name,
        classnames=names,
        template=template_for(name),
        train=[],
        val=[],
        test=test,
        reader=FileReader(reader_root),
        split_source=source,
        info=info,
    )


def load_imagenetv2(root: Path | None, options: LoadOptions) -> Dataset:
    """Folders ``0``..``999`` are ImageNet labels; class names in ImageNet label order."""
    layout = LAYOUTS["imagenetv2"]
    folder = dataset_folder(layout, root)
    image_dir = _require(layout, root, folder / "imagenetv2-matched-frequency-format-val", "image folder")
    # label k is ImageNet's k-th class in sorted-wnid order, whatever the order of classnames.txt
    names, source = imagenet_classnames(folder, imagenet_wnids())
    folders = _subfolders(image_dir)
    bad = [f for f in folders if not (f.isdigit() and int(f) < 1000)]
    if bad:
        raise _missing(layout, root, f"{image_dir} has folders that are not labels 0..999: {', '.join(bad[:5])}")
    test = []
    for f in sorted(folders, key=int):
        test.extend(Sample(f"{f}/{im}", int(f), names[int(f)]) for im in _files(image_dir / f))
    return _test_only("imagenetv2", names, test, image_dir, "folders 0..999 (labels)", {"classnames": source})


def load_imagenet_sketch(root: Path | None, options: LoadOptions) -> Dataset:
    """Labels over the sorted wnid folders of ``images/`` (as CoOp; all 1,000 in the full dataset)."""
    layout = LAYOUTS["imagenet_sketch"]
    folder = dataset_folder(layout, root)
    image_dir = _require(layout, root, folder / "images", "image folder")
    wnids = _subfolders(image_dir)
    if not wnids:
        raise _missing(layout, root, f"{image_dir} holds no wnid folders")
    names, source = imagenet_classnames(folder, wnids)
    test = _class_folder_items(image_dir, "", wnids, {w: i for i, w in enumerate(wnids)}, names)
    return _test_only("imagenet_sketch", names, test, image_dir, "wnid folders of images/", {"classnames": source})


def _load_200(name: str, image_subdir: str, subset: tuple[str, ...], root: Path | None) -> Dataset:
    layout = LAYOUTS[name]
    folder = dataset_folder(layout, root)
    image_dir = _require(layout, root, folder / image_subdir, "image folder")
    present = _subfolders(image_dir)  # files such as README.txt are ignored
    labels = {w: i for i, w in enumerate(subset)}
    foreign = [w for w in present if w not in labels]
    if foreign:
        raise _missing(
            layout, root, f"{image_dir} has folders outside the 200 {layout.title} classes: {', '.join(foreign[:5])}"
        )
    if not present:
        raise _missing(layout, root, f"{image_dir} holds no wnid folders")
    names, source = imagenet_classnames(folder, subset)
    test = _class_folder_items(image_dir, "", present, labels, names)
    return _test_only(name, names, test, image_dir, f"wnid folders of {image_subdir}/", {"classnames": source})


def load_imagenet_a(root: Path | None, options: LoadOptions) -> Dataset:
    return _load_200("imagenet_a", "imagenet-a", imagenet_a_wnids(), root)


def load_imagenet_r(root: Path | None, options: LoadOptions) -> Dataset:
    return _load_200("imagenet_r", "imagenet-r", imagenet_r_wnids(), root)


LOADERS: dict[str, Callable[[Path | None, LoadOptions], Dataset]] = {
    "imagenet": load_imagenet,
    **{name: b.load for name, b in SPLIT_BENCHMARKS.items()},
    "fgvc_aircraft": load_fgvc_aircraft,
    "imagenetv2": load_imagenetv2,
    "imagenet_sketch": load_imagenet_sketch,
    "imagenet_a": load_imagenet_a,
    "imagenet_r": load_imagenet_r,
}
