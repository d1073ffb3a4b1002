"""Miniature copies of the 15 benchmark folders in their exact CoOp layouts (tiny 8x8 images).

``build(root, name)`` writes ``root/<dataset folder>/...`` with a split file over a few classes
(or the special files FGVC-Aircraft, ImageNet and the variants need) and returns what a reader
must find: class names in label order, split sizes and the template. ``build_raw(root, name)``
writes the original annotation files instead of a split file (for ``--make-split``).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# train / val / test images per class in the split files
SIZES = {"train": 4, "val": 2, "test": 2}


@dataclass
class Tree:
    folder: Path  # the dataset folder
    classnames: list[str]  # expected names in label order
    counts: dict[str, int]  # expected images per split
    template: str


def image(path: Path, colour: int = 0, fmt: str | None = None) -> None:
    """An 8x8 image whose colour encodes ``colour`` (JPEG unless the suffix says otherwise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = ((colour * 67) % 256, (colour * 131 + 40) % 256, (colour * 29 + 90) % 256)
    Image.fromarray(np.full((8, 8, 3), rgb, dtype=np.uint8)).save(path, format=fmt)


def bomb_png(path: Path, side: int = 100_000) -> None:
    """A valid PNG header declaring side x side pixels (10^10 by default) with almost no data: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _split_file(folder: Path, image_dir: Path, file: str, classes: list[tuple[str, str]], name_of) -> None:
    """Write a split file over ``classes`` = [(raw class, name in the file)]; images at name_of(raw, split, i)."""
    split = {}
    for key, n in SIZES.items():
        entries = []
        for label, (raw, listed) in enumerate(classes):
            for i in range(n):
                rel = name_of(raw, key, i)
                image(image_dir / rel, label)
                entries.append([rel, label, listed])
        split[key] = entries
    (folder / file).write_text(json.dumps(split))


def _counts(n_classes: int) -> dict[str, int]:
    return {k: v * n_classes for k, v in SIZES.items()}


def build(root: Path, name: str, *, classnames_txt: bool = True) -> Tree:
    """The dataset folder of ``name`` under ``root`` in CoOp's layout, with a split file."""
    simple = {
        # name: (folder, image dir, split file, [(raw, listed)], path pattern, expected names, template)
        "dtd": (
            "dtd",
            "images",
            "split_zhou_DescribableTextures.json",
            [("banded", "banded"), ("blotchy", "blotchy"), ("zigzagged", "zigzagged")],
            lambda c, k, i: f"{c}/{c}_{k}{i:02d}.jpg",
            ["banded", "blotchy", "zigzagged"],
            "a photo of a {}, a type of texture.",
        ),
        # The published file already holds the renamed names; raw names are renamed too.
        "caltech101": (
            "caltech-101",
            "101_ObjectCategories",
            "split_zhou_Caltech101.json",
            [("Faces", "Faces"), ("Leopards", "leopard"), ("accordion", "accordion"), ("airplanes", "airplanes")],
            lambda c, k, i: f"{c}/image_{k}{i:03d}.jpg",
            ["face", "leopard", "accordion", "airplane"],
            "a photo of a {}.",
        ),
        "oxford_pets": (
            "oxford_pets",
            "images",
            "split_zhou_OxfordPets.json",
            [("Abyssinian", "abyssinian"), ("american_bulldog", "american_bulldog")],
            lambda c, k, i: f"{c}_{k}{i}.jpg",
            ["abyssinian", "american_bulldog"],
            "a photo of a {}, a type of pet.",
        ),
        "stanford_cars": (
            "stanford_cars",
            "",
            "split_zhou_StanfordCars.json",
            [("a", "2012 Acura TL Sedan"), ("b", "2012 BMW M3 Coupe")],
            lambda c, k, i: f"cars_{'test' if k == 'test' else 'train'}/{c}{k}{i:04d}.jpg",
            ["2012 Acura TL Sedan", "2012 BMW M3 Coupe"],
            "a photo of a {}.",
        ),
        "oxford_flowers": (
            "oxford_flowers",
            "jpg",
            "split_zhou_OxfordFlowers.json",
            [("a", "pink primrose"), ("b", "hard-leaved pocket orchid"), ("c", "canterbury bells")],
            lambda c, k, i: f"image_{c}{k}{i:03d}.jpg",
            ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"],
            "a photo of a {}, a type of flower.",
        ),
        "food101": (
            "food-101",
            "images",
            "split_zhou_Food101.json",
            [("apple_pie", "apple_pie"), ("baby_back_ribs", "baby_back_ribs")],
            lambda c, k, i: f"{c}/{k}{i}.jpg",
            ["apple_pie", "baby_back_ribs"],
            "a photo of {}, a type of food.",
        ),
        "sun397": (
            "sun397",
            "SUN397",
            "split_zhou_SUN397.json",
            [("a/abbey", "abbey"), ("a/apartment_building/outdoor", "outdoor apartment_building")],
            lambda c, k, i: f"{c}/sun_{k}{i}.jpg",
            ["abbey", "outdoor apartment_building"],
            "a photo of a {}.",
        ),
        "eurosat": (
            "eurosat",
            "2750",
            "split_zhou_EuroSAT.json",
            [("AnnualCrop", "AnnualCrop"), ("Forest", "Forest"), ("SeaLake", "Sea or Lake"), ("Highway", "Highway")],
            lambda c, k, i: f"{c}/{c}_{k}{i}.jpg",
            ["Annual Crop Land", "Forest", "Sea or Lake", "Highway or Road"],
            "a centered satellite photo of {}.",
        ),
        "ucf101": (
            "ucf101",
            "UCF-101-midframes",
            "split_zhou_UCF101.json",
            [("Apply_Eye_Makeup", "Apply_Eye_Makeup"), ("Band_Marching", "Band_Marching")],
            lambda c, k, i: f"{c}/v_{c.replace('_', '')}_g{k}_c{i:02d}.jpg",
            ["Apply_Eye_Makeup", "Band_Marching"],
            "a photo of a person doing {}.",
        ),
    }
    if name in simple:
        folder_name, image_dir, split_file, classes, name_of, expected, template = simple[name]
        folder = root / folder_name
        folder.mkdir(parents=True)
        _split_file(folder, folder / image_dir if image_dir else folder, split_file, classes, name_of)
        return Tree(folder, expected, _counts(len(classes)), template)
    return _SPECIAL[name](root, classnames_txt)


def add_dtd_class(folder: Path, name: str = "braided") -> None:
    """Add a fourth class to the DTD miniature (3 classes): base-to-new needs 2 base and 2 new classes."""
    split_file = folder / "split_zhou_DescribableTextures.json"
    split = json.loads(split_file.read_text())
    label = 1 + max(label for entries in split.values() for _, label, _ in entries)
    for key, n in SIZES.items():
        for i in range(n):
            image(folder / "images" / name / f"{name}_{key}{i:02d}.jpg", label)
            split[key].append([f"{name}/{name}_{key}{i:02d}.jpg", label, name])
    split_file.write_text(json.dumps(split))


def _fgvc(root: Path, _: bool) -> Tree:
    folder = root / "fgvc_aircraft"
    variants = ["707-320", "A300B4", "Cessna 172"]  # variant names may contain spaces
    (folder / "images").mkdir(parents=True)
    (folder / "variants.txt").write_text("\n".join(variants) + "\n")
    n = 1000000
    for key, per_class in SIZES.items():
        lines = []
        for label, variant in enumerate(variants):
            for _ in range(per_class):
                n += 1
                image(folder / "images" / f"{n}.jpg", label)
                lines.append(f"{n} {variant}")
        (folder / f"images_variant_{key}.txt").write_text("\n".join(lines) + "\n")
    return Tree(folder, variants, _counts(3), "a photo of a {}, a type of aircraft.")


IMAGENET_3 = ["n01440764", "n01443537", "n01484850"]  # labels 0, 1, 2 of ImageNet-1k
IMAGENET_3_NAMES = ["tench", "goldfish", "great white shark"]  # open_clip's CLIP names


def _classnames_txt(folder: Path, wnids: list[str], names: list[str]) -> None:
    (folder / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in zip(wnids, names, strict=True)))


def _imagenet(root: Path, classnames_txt: bool) -> Tree:
    folder = root / "imagenet"
    names = ["tench fish", "goldfish", "great white shark"] if classnames_txt else IMAGENET_3_NAMES
    for label, wnid in enumerate(IMAGENET_3):
        for i in range(5):
            image(folder / "images" / "train" / wnid / f"{wnid}_{i}.JPEG", label, "JPEG")
        for i in range(2):
            image(folder / "images" / "val" / wnid / f"ILSVRC2012_val_{label}{i:07d}.JPEG", label, "JPEG")
    if classnames_txt:
        _classnames_txt(folder, IMAGENET_3, names)
    return Tree(folder, names, {"train": 15, "val": 0, "test": 6}, "a photo of a {}.")


def _imagenetv2(root: Path, classnames_txt: bool) -> Tree:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    from clipfit.data.imagenet import imagenet_wnids

    folder = root / "imagenetv2"
    names = list(IMAGENET_CLASSNAMES)
    if classnames_txt:
        names[0] = "tench fish"
        folder.mkdir(parents=True, exist_ok=True)
        _classnames_txt(folder, list(imagenet_wnids()), names)
    for label in (0, 1, 999):
        for i in range(2):
            image(folder / "imagenetv2-matched-frequency-format-val" / str(label) / f"{label}{i}.jpeg", label)
    return Tree(folder, names, {"train": 0, "val": 0, "test": 6}, "a photo of a {}.")


def _sketch(root: Path, classnames_txt: bool) -> Tree:
    folder = root / "imagenet-sketch"
    for label, wnid in enumerate(IMAGENET_3):
        for i in range(3):
            image(folder / "images" / wnid / f"sketch_{i}.JPEG", label, "JPEG")
    names = ["tench sketch", "goldfish", "great white shark"] if classnames_txt else IMAGENET_3_NAMES
    if classnames_txt:
        _classnames_txt(folder, IMAGENET_3, names)
    return Tree(folder, names, {"train": 0, "val": 0, "test": 9}, "a photo of a {}.")


def _two_hundred(name: str, folder_name: str, subdir: str):
    def build_it(root: Path, classnames_txt: bool) -> Tree:
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        from clipfit.data import imagenet

        subset = list(imagenet.imagenet_a_wnids() if name == "imagenet_a" else imagenet.imagenet_r_wnids())
        folder = root / folder_name
        picked = [subset[0], subset[7], subset[199]]
        for wnid in picked:
            for i in range(2):
                image(folder / subdir / wnid / f"art_{i}.jpg", subset.index(wnid))
        (folder / subdir / "README.txt").write_text("ignored\n")
        index = {w: i for i, w in enumerate(imagenet.imagenet_wnids())}
        names = [IMAGENET_CLASSNAMES[index[w]] for w in subset]
        if classnames_txt:
            names = [f"{n} ({w})" for n, w in zip(names, subset, strict=True)]
            _classnames_txt(folder, subset, names)
        return Tree(folder, names, {"train": 0, "val": 0, "test": 6}, "a photo of a {}.")

    return build_it


_SPECIAL = {
    "fgvc_aircraft": _fgvc,
    "imagenet": _imagenet,
    "imagenetv2": _imagenetv2,
    "imagenet_sketch": _sketch,
    "imagenet_a": _two_hundred("imagenet_a", "imagenet-adversarial", "imagenet-a"),
    "imagenet_r": _two_hundred("imagenet_r", "imagenet-rendition", "imagenet-r"),
}


# ---------------------------------------------------------------------------- original annotation files
def build_raw(root: Path, name: str) -> Path:
    """The dataset folder with its original annotation files and no split file (for --make-split)."""
    builders = {
        "caltech101": _raw_caltech,
        "oxford_pets": _raw_pets,
        "stanford_cars": _raw_cars,
        "oxford_flowers": _raw_flowers,
        "sun397": _raw_sun,
        "ucf101": _raw_ucf,
    }
    return builders[name](root)


def _raw_caltech(root: Path) -> Path:
    folder = root / "caltech-101"
    for label, c in enumerate(["BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "airplanes"]):
        for i in range(10):
            image(folder / "101_ObjectCategories" / c / f"image_{i:04d}.jpg", label)
    return folder


def _raw_pets(root: Path) -> Path:
    folder = root / "oxford_pets"
    (folder / "annotations").mkdir(parents=True)
    lines = {"trainval.txt": [], "test.txt": []}
    for label, breed in enumerate(["Abyssinian", "american_bulldog"], 1):
        for i in range(1, 11):
            image(folder / "images" / f"{breed}_{i}.jpg", label)
            lines["test.txt" if i > 7 else "trainval.txt"].append(f"{breed}_{i} {label} 1 1")
    for file, items in lines.items():
        (folder / "annotations" / file).write_text("\n".join(items) + "\n")
    return folder


def _raw_cars(root: Path) -> Path:
    from scipy.io import savemat

    folder = root / "stanford_cars"
    (folder / "devkit").mkdir(parents=True)
    names = np.empty((1, 2), dtype=object)
    names[0, 0], names[0, 1] = "Acura TL Sedan 2012", "BMW M3 Coupe 2012"
    savemat(str(folder / "devkit" / "cars_meta.mat"), {"class_names": names})
    annotations = {"cars_train": folder / "devkit" / "cars_train_annos.mat"}
    annotations["cars_test"] = folder / "cars_test_annos_withlabels.mat"
    for split, mat in annotations.items():
        records = np.empty((1, 10), dtype=[("fname", "O"), ("class", "O")])
        for i in range(10):
            records[0, i] = (f"{i + 1:05d}.jpg", np.array([[i % 2 + 1]], dtype=np.uint8))
            image(folder / split / f"{i + 1:05d}.jpg", i % 2)
        savemat(str(mat), {"annotations": records})
    return folder


def _raw_flowers(root: Path) -> Path:
    from scipy.io import savemat

    folder = root / "oxford_flowers"
    labels = [1, 2, 3] * 4
    for i, label in enumerate(labels):
        image(folder / "jpg" / f"image_{i + 1:05d}.jpg", label)
    savemat(str(folder / "imagelabels.mat"), {"labels": np.array([labels])})
    (folder / "cat_to_name.json").write_text(json.dumps({"1": "pink primrose", "2": "globe thistle", "3": "lotus"}))
    return folder


def _raw_sun(root: Path) -> Path:
    folder = root / "sun397"
    classes = ["/a/abbey", "/b/bakery/shop"]
    folder.mkdir(parents=True)
    (folder / "ClassName.txt").write_text("\n".join(classes) + "\n")
    train, test = [], []
    for label, c in enumerate(classes):
        for i in range(6):
            rel = f"{c}/sun_{i}.jpg"
            image(folder / "SUN397" / rel[1:], label)
            (test if i >= 4 else train).append(rel)
    (folder / "Training_01.txt").write_text("\n".join(train) + "\n")
    (folder / "Testing_01.txt").write_text("\n".join(test) + "\n")
    return folder


def _raw_ucf(root: Path) -> Path:
    folder = root / "ucf101"
    lists = folder / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 BandMarching\n")
    train, test = [], []
    for label, action in enumerate(["ApplyEyeMakeup", "BandMarching"], 1):
        renamed = {"ApplyEyeMakeup": "Apply_Eye_Makeup", "BandMarching": "Band_Marching"}[action]
        for i in range(6):
            image(folder / "UCF-101-midframes" / renamed / f"v_{action}_g{i:02d}_c01.jpg", label)
            (test if i >= 4 else train).append(f"{action}/v_{action}_g{i:02d}_c01.avi" + (f" {label}" if i < 4 else ""))
    (lists / "trainlist01.txt").write_text("\n".join(train) + "\n")
    (lists / "testlist01.txt").write_text("\n".join(test) + "\n")
    return folder
