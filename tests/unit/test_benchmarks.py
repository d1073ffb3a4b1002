"""The 15 benchmark readers on miniature copies of their CoOp layouts (PAPER.md sections 4-5)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from textwrap import indent

import pytest
from fixture_trees import IMAGENET_3, IMAGENET_3_NAMES, build, build_raw, image
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

from clipfit.data import catalog, imagenet
from clipfit.data.base import DataError
from clipfit.data.registry import dataset_names, expand_names, get_spec, load_dataset

ALL15 = [*catalog.BENCHMARKS, *catalog.IMAGENET_VARIANTS]


def test_fifteen_datasets_are_registered_with_the_test_only_variants_marked():
    assert set(ALL15) <= set(dataset_names()) and len(ALL15) == 15
    assert [n for n in ALL15 if get_spec(n).test_only] == list(catalog.IMAGENET_VARIANTS)
    assert expand_names(["all", "dtd", "imagenet-variants"]) == ALL15


@pytest.mark.parametrize("name", ALL15)
def test_reads_its_fixture_tree(name, tmp_path):
    tree = build(tmp_path, name)
    dataset = load_dataset(name, tmp_path)
    assert dataset.classnames == tree.classnames
    assert {k: len(getattr(dataset, k)) for k in ("train", "val", "test")} == tree.counts
    assert dataset.template == tree.template
    for sample in [*dataset.train, *dataset.val, *dataset.test]:
        assert dataset.classnames[sample.label] == sample.classname
        assert (dataset.reader.root / sample.path).is_file()
    first = (dataset.train or dataset.test)[0]
    assert dataset.reader(first.path).size == (8, 8)
    assert dataset.comparable


def test_split_file_labels_and_paths_are_kept(tmp_path):
    build(tmp_path, "dtd")
    dataset = load_dataset("dtd", tmp_path)
    split = json.loads((tmp_path / "dtd" / "split_zhou_DescribableTextures.json").read_text())
    assert [s.to_json() for s in dataset.test] == split["test"]
    assert dataset.reader.root == tmp_path / "dtd" / "images"


def test_caltech101_and_eurosat_renames(tmp_path):
    build(tmp_path, "caltech101")
    build(tmp_path, "eurosat")
    caltech = load_dataset("caltech101", tmp_path)
    assert caltech.classnames == ["face", "leopard", "accordion", "airplane"]
    assert {s.classname for s in caltech.train if s.path.startswith("airplanes/")} == {"airplane"}
    eurosat = load_dataset("eurosat", tmp_path)
    assert eurosat.classnames == ["Annual Crop Land", "Forest", "Sea or Lake", "Highway or Road"]
    assert set(catalog.EUROSAT_RENAMES.values()) >= set(eurosat.classnames)


def test_fgvc_aircraft_reads_the_official_variant_files(tmp_path):
    tree = build(tmp_path, "fgvc_aircraft")
    dataset = load_dataset("fgvc_aircraft", tmp_path)
    first = (tree.folder / "images_variant_train.txt").read_text().splitlines()[0].split(" ", 1)
    assert dataset.train[0].path == f"{first[0]}.jpg" and dataset.train[0].classname == first[1]
    assert "Cessna 172" in dataset.classnames  # variant names with spaces survive


def test_imagenet_lists_sorted_samples_train_only_and_uses_val_as_test(tmp_path):
    build(tmp_path, "imagenet")
    dataset = load_dataset("imagenet", tmp_path)
    paths = [s.path for s in dataset.train]
    assert paths == sorted(paths)  # CoOp lists with os.listdir; clipfit sorts
    assert dataset.val == [] and not dataset.fewshot_val
    assert {s.path.split("/")[0] for s in dataset.test} == {"val"}
    assert dataset.info["classnames"].endswith("classnames.txt")


@pytest.mark.parametrize("name", ["imagenet", "imagenet_sketch", "imagenet_a", "imagenet_r", "imagenetv2"])
def test_imagenet_family_falls_back_to_open_clip_names(name, tmp_path):
    tree = build(tmp_path, name, classnames_txt=False)
    dataset = load_dataset(name, tmp_path)
    assert dataset.classnames == tree.classnames
    assert dataset.info["classnames"] == "open_clip IMAGENET_CLASSNAMES"
    if name in ("imagenet", "imagenet_sketch"):
        assert dataset.classnames == IMAGENET_3_NAMES


@pytest.mark.parametrize("name", ["imagenet_a", "imagenet_r"])
def test_imagenet_a_and_r_are_labelled_over_their_200_classes(name, tmp_path):
    build(tmp_path, name)
    dataset = load_dataset(name, tmp_path)
    subset = imagenet.imagenet_a_wnids() if name == "imagenet_a" else imagenet.imagenet_r_wnids()
    assert len(dataset.classnames) == 200
    assert sorted({s.label for s in dataset.test}) == [0, 7, 199]
    assert {s.path.split("/")[0] for s in dataset.test if s.label == 199} == {subset[199]}


def test_imagenetv2_folders_are_imagenet_labels(tmp_path):
    build(tmp_path, "imagenetv2", classnames_txt=False)
    dataset = load_dataset("imagenetv2", tmp_path)
    assert len(dataset.classnames) == 1000
    assert {(s.path.split("/")[0], s.label, s.classname) for s in dataset.test} == {
        ("0", 0, IMAGENET_CLASSNAMES[0]),
        ("1", 1, IMAGENET_CLASSNAMES[1]),
        ("999", 999, IMAGENET_CLASSNAMES[999]),
    }
    # a classnames.txt in another line order still names label k after ImageNet's k-th (sorted) wnid
    folder = tmp_path / "imagenetv2"
    lines = [f"{w} {n}" for w, n in zip(imagenet.imagenet_wnids(), IMAGENET_CLASSNAMES, strict=True)]
    (folder / "classnames.txt").write_text("\n".join(reversed(lines)) + "\n")
    assert load_dataset("imagenetv2", tmp_path).classnames == list(IMAGENET_CLASSNAMES)


def test_embedded_wnid_lists():
    """The 1,000 ImageNet wnids (sorted = label order) and the 200-class subsets of ImageNet-A/-R.

    Golden values from hendrycks/imagenet-r eval.py (the imagenet_r_mask indices) and
    hendrycks/natural-adv-examples eval.py (thousand_k_to_200)."""
    wnids = imagenet.imagenet_wnids()
    assert len(wnids) == len(set(wnids)) == 1000 and list(wnids) == sorted(wnids)
    assert wnids[:2] == ("n01440764", "n01443537") and wnids[-1] == "n15075141"
    for subset, first_indices in (
        (imagenet.imagenet_a_wnids(), [6, 11, 13, 15, 17, 22, 23, 27, 30, 37]),
        (imagenet.imagenet_r_wnids(), [1, 2, 4, 6, 8, 9, 11, 13, 22, 23]),
    ):
        assert len(subset) == len(set(subset)) == 200 and list(subset) == sorted(subset)
        assert set(subset) <= set(wnids)
        assert [wnids.index(w) for w in subset[:10]] == first_indices
    assert wnids.index(imagenet.imagenet_a_wnids()[-1]) == 988
    assert wnids.index(imagenet.imagenet_r_wnids()[-1]) == 988


# ---------------------------------------------------------------------------- --make-split
@pytest.mark.parametrize(
    ("name", "classnames"),
    [
        ("caltech101", ["face", "leopard", "airplane"]),  # BACKGROUND_Google and Faces_easy dropped
        ("oxford_pets", ["abyssinian", "american_bulldog"]),
        ("stanford_cars", ["2012 Acura TL Sedan", "2012 BMW M3 Coupe"]),  # year first
        ("oxford_flowers", ["pink primrose", "globe thistle", "lotus"]),
        ("sun397", ["abbey", "shop bakery"]),  # letter folder dropped, last word first
        ("ucf101", ["Apply_Eye_Makeup", "Band_Marching"]),  # CamelCase split into words
    ],
)
def test_make_split_follows_coops_rules_and_is_not_comparable(name, classnames, tmp_path, clipfit_cache):
    folder = build_raw(tmp_path, name)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    dataset = load_dataset(name, tmp_path, make_split=True)
    assert dataset.classnames == classnames and not dataset.comparable
    assert dataset.train and dataset.val and dataset.test
    assert all((dataset.reader.root / s.path).is_file() for s in [*dataset.train, *dataset.val, *dataset.test])
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # nothing written into the dataset
    saved = Path(dataset.split_source.split()[-1])
    assert saved.is_file() and saved.is_relative_to(clipfit_cache)
    assert load_dataset(name, tmp_path, make_split=True).train == dataset.train  # the saved split is reused


def test_make_split_of_class_folders_is_50_20_30(tmp_path):
    build_raw(tmp_path, "caltech101")  # 10 images per class
    dataset = load_dataset("caltech101", tmp_path, make_split=True)
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        assert [sum(s.label == c for s in getattr(dataset, split)) for c in range(3)] == [n] * 3


# ---------------------------------------------------------------------------- failures
def test_missing_data_root_shows_the_expected_tree_and_sources(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("oxford_pets", tmp_path / "nowhere")
    message = str(err.value)
    assert f"data root {tmp_path / 'nowhere'} does not exist" in message
    assert "oxford_pets/\n" in message and "split_zhou_OxfordPets.json" in message
    assert "https://www.robots.ox.ac.uk/~vgg/data/pets/" in message and "drive.google.com" in message


@pytest.mark.parametrize("name", ALL15)
def test_missing_dataset_folder_shows_that_datasets_tree(name, tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(name, tmp_path)
    layout = catalog.RECORDS[name]
    assert f"dataset folder {tmp_path / layout.folder} not found" in str(err.value)
    assert indent(layout.tree, "    ") in str(err.value) and indent(layout.sources, "    ") in str(err.value)


def test_no_data_root_at_all(tmp_path):
    with pytest.raises(DataError, match="needs --data-root"):
        load_dataset("dtd", None)


def test_missing_split_file_explains_its_source_and_offers_make_split(tmp_path):
    tree = build(tmp_path, "food101")
    (tree.folder / "split_zhou_Food101.json").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("food101", tmp_path)
    message = str(err.value)
    assert "split_zhou_Food101.json not found" in message and "CoOp's published split" in message
    assert "--make-split" in message and '"comparable": false' in message
    assert "https://drive.google.com/file/d/1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl" in message


def test_missing_image_folder_and_images_the_split_file_lists(tmp_path):
    tree = build(tmp_path, "dtd")
    os.rename(tree.folder / "images", tree.folder / "imgs")
    with pytest.raises(DataError, match=r"image folder .*dtd/images not found"):
        load_dataset("dtd", tmp_path)
    (tree.folder / "images" / "banded").mkdir(parents=True)
    with pytest.raises(DataError, match=r"lists 'banded/banded_train00.jpg' in 'train', but .* does not exist"):
        load_dataset("dtd", tmp_path)


def test_malformed_split_files_are_named(tmp_path):
    tree = build(tmp_path, "dtd")
    split_file = tree.folder / "split_zhou_DescribableTextures.json"
    split_file.write_text('{"train": [], "val": []}')
    with pytest.raises(DataError, match="has no 'test' list"):
        load_dataset("dtd", tmp_path)
    split_file.write_text('{"train": [["a.jpg", "x", "c"]], "val": [], "test": []}')
    with pytest.raises(DataError, match=r"entry 0 of 'train' is \['a.jpg', 'x', 'c'\]"):
        load_dataset("dtd", tmp_path)
    split_file.write_text("{not json")
    with pytest.raises(DataError, match="is not valid JSON"):
        load_dataset("dtd", tmp_path)


def test_imagenet_val_must_be_sorted_into_class_folders(tmp_path):
    build(tmp_path, "imagenet")
    val = tmp_path / "imagenet" / "images" / "val"
    for wnid in IMAGENET_3:
        for f in (val / wnid).iterdir():
            f.rename(val / f.name)
        (val / wnid).rmdir()
    with pytest.raises(DataError, match="must be sorted into the same wnid folders"):
        load_dataset("imagenet", tmp_path)


def test_unknown_wnids_need_a_classnames_file(tmp_path):
    image(tmp_path / "imagenet-sketch" / "images" / "n99999999" / "a.jpg")
    with pytest.raises(DataError, match=r"not ImageNet-1k wnids.*classnames\.txt"):
        load_dataset("imagenet_sketch", tmp_path)
    image(tmp_path / "imagenet-rendition" / "imagenet-r" / "n01440764" / "a.jpg")  # tench is not in ImageNet-R
    with pytest.raises(DataError, match="outside the 200 ImageNet-R classes: n01440764"):
        load_dataset("imagenet_r", tmp_path)


def test_unknown_dataset_lists_the_known_ones_and_the_user_forms():
    with pytest.raises(DataError) as err:
        get_spec("dtdd")
    message = str(err.value)
    assert "unknown dataset 'dtdd'" in message and "dtd" in message and "imagenet_r" in message
    assert "folder:PATH" in message and "csv:FILE" in message


def test_unreadable_image_names_the_file(tmp_path):
    tree = build(tmp_path, "dtd")
    dataset = load_dataset("dtd", tmp_path)
    broken = tree.folder / "images" / dataset.train[0].path
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=f"cannot read image {broken}"):
        dataset.reader(dataset.train[0].path)


def test_classnames_flag_is_only_for_user_data(tmp_path):
    build(tmp_path, "dtd")
    with pytest.raises(DataError, match="--classnames applies to folder:/csv: datasets"):
        load_dataset("dtd", tmp_path, classnames="names.txt")


def test_docs_show_every_tree_and_split_source():
    page = (Path(__file__).parents[2] / "docs" / "datasets.md").read_text()
    for layout in catalog.RECORDS.values():
        assert layout.tree in page, f"docs/datasets.md lacks the tree of {layout.name}"
        for line in layout.sources.splitlines():
            assert line.strip() in page, f"docs/datasets.md lacks '{line}' ({layout.name})"
