"""The user's own images: --dataset folder:PATH and --dataset csv:FILE."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fixture_trees import image

from clipfit.data.base import DataError
from clipfit.data.registry import canonical_name, dataset_slug, load_dataset
from clipfit.data.sampling import draw_few_shot


def _folder(root: Path, classes=("golden_retriever", "tabby_cat"), n: int = 10) -> Path:
    for label, c in enumerate(classes):
        for i in range(n):
            image(root / c / f"img{i:03d}.{'png' if i % 2 else 'jpg'}", label)
    return root


def _listing(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*"))


def test_a_class_folder_tree_is_split_50_20_30_and_the_split_saved_outside_it(tmp_path, clipfit_cache):
    root = _folder(tmp_path / "pets")
    (root / "notes.txt").write_text("not an image, not a class")
    before = _listing(root)
    dataset = load_dataset(f"folder:{root}")
    assert dataset.classnames == ["golden_retriever", "tabby_cat"] and dataset.template == "a photo of a {}."
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (10, 4, 6)
    assert dataset.reader(dataset.train[0].path).size == (8, 8)
    saved = Path(dataset.split_source.split()[-1])
    assert saved.is_relative_to(clipfit_cache) and json.loads(saved.read_text())["test"]
    draw = draw_few_shot(dataset, 2, 1)
    assert draw.path.is_relative_to(clipfit_cache)
    assert _listing(root) == before  # nothing was written into the user's folder
    again = load_dataset(f"folder:{root}")
    assert (again.train, again.test) == (dataset.train, dataset.test)


def test_the_saved_split_keeps_its_images_when_the_folder_grows(tmp_path):
    root = _folder(tmp_path / "pets")
    first = load_dataset(f"folder:{root}")
    image(root / "tabby_cat" / "img999.jpg")
    assert load_dataset(f"folder:{root}").train == first.train
    (root / "siamese").mkdir()
    image(root / "siamese" / "a.jpg")
    with pytest.raises(DataError, match="other classes than the split saved at"):
        load_dataset(f"folder:{root}")


def test_train_val_test_sub_trees_are_used_as_given(tmp_path):
    root = tmp_path / "mine"
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        _folder(root / split, n=n)
    dataset = load_dataset(f"folder:{root}")
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (6, 2, 4)
    assert {s.path.split("/")[0] for s in dataset.test} == {"test"}
    assert dataset.split_source.startswith("sub-trees train/, val/, test/")


def test_a_class_name_file_renames_folder_classes(tmp_path):
    root = _folder(tmp_path / "pets")
    names = tmp_path / "names.txt"
    names.write_text("golden retriever dog\ntabby cat\n")
    assert load_dataset(f"folder:{root}", classnames=str(names)).classnames == ["golden retriever dog", "tabby cat"]
    names.write_text("only one\n")
    with pytest.raises(DataError, match="has 1 names for 2 classes"):
        load_dataset(f"folder:{root}", classnames=str(names))


def test_folder_errors(tmp_path, clipfit_cache):
    with pytest.raises(DataError, match=r"no such folder. A folder dataset looks like\nPATH/"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "flat").mkdir()
    image(tmp_path / "flat" / "a.jpg")
    with pytest.raises(DataError, match="has no class sub-folders"):
        load_dataset(f"folder:{tmp_path / 'flat'}")
    # CoOp's rounding: 3 images split 2/1/0, so 4 is the least a class can have
    _folder(tmp_path / "small", n=3)
    with pytest.raises(DataError, match=r"has 3 images, too few to split 50%/20%/30% .* \(at least 4 needed\)"):
        load_dataset(f"folder:{tmp_path / 'small'}")
    _folder(tmp_path / "enough", n=4)
    enough = load_dataset(f"folder:{tmp_path / 'enough'}")
    assert (len(enough.train), len(enough.val), len(enough.test)) == (4, 2, 2)


def _csv(tmp_path: Path, text: str) -> Path:
    _folder(tmp_path / "imgs", n=10)
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def test_csv_with_class_names_and_a_split_column(tmp_path):
    rows = ["path,label,split"]
    for c in ("golden_retriever", "tabby_cat"):
        rows += [f"imgs/{c}/img000.jpg,{c},train", f"imgs/{c}/img001.png,{c},val", f"imgs/{c}/img002.jpg,{c},test"]
    path = _csv(tmp_path, "\n".join(rows) + "\n")
    dataset = load_dataset(f"csv:{path}")
    assert dataset.classnames == ["golden_retriever", "tabby_cat"]
    assert [len(dataset.train), len(dataset.val), len(dataset.test)] == [2, 2, 2]
    assert dataset.reader(dataset.test[0].path).size == (8, 8)
    # the same file saved by a spreadsheet as "CSV UTF-8" starts with a byte-order mark
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_dataset(f"csv:{path}").classnames == ["golden_retriever", "tabby_cat"]


def test_csv_with_integer_labels_needs_a_class_name_file(tmp_path):
    rows = []
    for label, c in enumerate(["golden_retriever", "tabby_cat"]):
        rows += [f"imgs/{c}/img{i:03d}.{'png' if i % 2 else 'jpg'},{label}" for i in range(10)]
    path = _csv(tmp_path, "\n".join(rows) + "\n")
    with pytest.raises(DataError, match="integer labels: give their names with --classnames"):
        load_dataset(f"csv:{path}")
    names = tmp_path / "names.txt"
    names.write_text("dog\ncat\n")
    dataset = load_dataset(f"csv:{path}", classnames=str(names))
    assert dataset.classnames == ["dog", "cat"]
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (10, 4, 6)  # saved 50/20/30 split
    assert {s.classname for s in dataset.train if s.label == 1} == {"cat"}


def test_csv_errors_name_the_line(tmp_path):
    path = _csv(tmp_path, "path,label,split\nimgs/tabby_cat/img000.jpg,cat,holdout\n")
    with pytest.raises(DataError, match="line 2: split 'holdout' is not one of train, val, test"):
        load_dataset(f"csv:{path}")
    path.write_text("path,label\nimgs/tabby_cat/img000.jpg,cat\nimgs/tabby_cat/img000.jpg,dog\n")
    with pytest.raises(DataError, match=r"lines 2 and 3 both list 'imgs/tabby_cat/img000\.jpg'"):
        load_dataset(f"csv:{path}")
    path.write_text("imgs/tabby_cat/img000.jpg\n")
    with pytest.raises(DataError, match="line 1: expected columns path,label"):
        load_dataset(f"csv:{path}")
    with pytest.raises(DataError, match="no such file"):
        load_dataset(f"csv:{tmp_path / 'none.csv'}")


def test_user_dataset_names_are_absolute_and_their_run_folders_short(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert canonical_name("folder:pets") == f"folder:{tmp_path / 'pets'}"
    assert dataset_slug(canonical_name("folder:pets")) == "folder-pets"
    assert dataset_slug("csv:/data/my.labels.csv") == "csv-my.labels"


def test_a_file_name_that_is_not_utf8_is_named_in_a_data_error(tmp_path, clipfit_cache):
    # bytes that are not UTF-8 come back from the file system as surrogates; the split file is UTF-8
    root = _folder(tmp_path / "odd", n=4)
    name = os.fsdecode(b"bad\xff.jpg")
    (root / "tabby_cat" / "img000.jpg").rename(root / "tabby_cat" / name)
    with pytest.raises(DataError, match=r"is not valid UTF-8 .*rename it"):
        load_dataset(f"folder:{root}")
