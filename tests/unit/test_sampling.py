"""Few-shot draws and base/new splits follow CoOp/Dassl exactly (PAPER.md section 6)."""

from __future__ import annotations

import json
import os
import random

import pytest
from fixture_trees import build

from clipfit.data import sampling
from clipfit.data.base import DataError, Dataset, Sample
from clipfit.data.registry import load_dataset
from clipfit.data.sampling import class_subsets, draw_few_shot, few_shot_split, group_by_label, sample_few_shot


def _items(labels: list[int], prefix: str = "img") -> list[Sample]:
    return [Sample(f"{prefix}{i}.jpg", label, f"class{label}") for i, label in enumerate(labels)]


def _dassl_reference(train: list[Sample], val: list[Sample], shots: int, seed: int) -> tuple[list, list]:
    """Dassl's generate_fewshot_dataset after set_random_seed, written out with the global `random`."""
    random.seed(seed)
    out = []
    for source, k in ((train, shots), (val, min(shots, 4))):
        tracker: dict[int, list[Sample]] = {}
        for item in source:
            tracker.setdefault(item.label, []).append(item)
        picked = []
        for items in tracker.values():
            picked.extend(random.sample(items, k) if len(items) >= k else items)
        out.append(picked)
    return out[0], out[1]


def test_groups_follow_first_appearance_and_keep_list_order():
    items = _items([2, 0, 2, 1, 0, 2])
    groups = group_by_label(items)
    assert list(groups) == [2, 0, 1]
    assert [s.path for s in groups[2]] == ["img0.jpg", "img2.jpg", "img5.jpg"]


def test_matches_the_dassl_algorithm_on_a_hand_built_split():
    rng = random.Random(0)
    train = _items([rng.randrange(5) for _ in range(200)])
    val = _items([rng.randrange(5) for _ in range(60)], prefix="val")
    for seed in (1, 2, 3):
        for shots in (1, 2, 4, 8, 16):
            assert few_shot_split(train, val, shots, seed) == _dassl_reference(train, val, shots, seed)


def test_val_is_capped_at_four_and_small_classes_are_taken_whole():
    train = _items([0] * 30 + [1] * 3 + [2] * 20)
    val = _items([0] * 10 + [1] * 10 + [2] * 2, prefix="val")
    few_train, few_val = few_shot_split(train, val, shots=16, seed=1)
    counts = {c: sum(s.label == c for s in few_train) for c in range(3)}
    assert counts == {0: 16, 1: 3, 2: 16}
    assert {c: sum(s.label == c for s in few_val) for c in range(3)} == {0: 4, 1: 4, 2: 2}
    assert [s for s in few_train if s.label == 1] == [s for s in train if s.label == 1]


def test_same_seed_same_subset_other_seed_other_subset():
    train = _items([i % 10 for i in range(500)])
    assert few_shot_split(train, [], 4, 1) == few_shot_split(train, [], 4, 1)
    assert few_shot_split(train, [], 4, 1) != few_shot_split(train, [], 4, 2)


def test_imagenet_style_samples_train_only():
    train, val = _items([0] * 20), _items([0] * 20, prefix="val")
    assert few_shot_split(train, val, 2, 1, sample_val=False)[1] == val


def test_sampling_ignores_the_global_random_state():
    train = _items([i % 3 for i in range(60)])
    random.seed(999)
    a = sample_few_shot(train, 2, random.Random(5))
    random.random()
    assert sample_few_shot(train, 2, random.Random(5)) == a


def _dataset(n_classes: int) -> Dataset:
    names = [f"c{i}" for i in range(n_classes)]
    return Dataset("toy", names, "a photo of a {}.", [], [], [], reader=lambda p: None)


def test_base_new_odd_count_puts_the_extra_class_in_base_and_relabels():
    dataset = _dataset(5)
    train = _items([4, 0, 3, 1, 2, 0])
    subsets = class_subsets(dataset, train, "base2new")
    assert subsets["base"].labels == (0, 1, 2) and subsets["new"].labels == (3, 4)
    assert subsets["new"].classnames == ("c3", "c4")
    relabelled = subsets["new"].relabel(_items([4, 0, 3, 4]))
    assert [(s.path, s.label) for s in relabelled] == [("img0.jpg", 1), ("img2.jpg", 0), ("img3.jpg", 1)]


def test_base_new_uses_only_labels_present_in_train():
    subsets = class_subsets(_dataset(6), _items([5, 1, 3]), "base2new")
    assert subsets["base"].labels == (1, 3) and subsets["new"].labels == (5,)


def test_fewshot_setting_uses_all_classes():
    subsets = class_subsets(_dataset(4), _items([0]), "fewshot")
    assert list(subsets) == ["all"] and subsets["all"].labels == (0, 1, 2, 3)


# ---------------------------------------------------------------------------- the JSON few-shot files
def _fixture(tmp_path, name="dtd"):
    build(tmp_path, name)
    return load_dataset(name, tmp_path)


def test_a_draw_is_saved_as_json_beside_the_split_file_and_reused(tmp_path):
    dataset = _fixture(tmp_path)
    draw = draw_few_shot(dataset, 2, 1)
    path = tmp_path / "dtd" / "split_fewshot" / "shot_2-seed_1.json"
    assert draw.path == path and not draw.reused
    saved = json.loads(path.read_text())
    assert set(saved) == {"train", "val"}
    assert saved["train"] == [s.to_json() for s in draw.train] and saved["val"] == [s.to_json() for s in draw.val]
    assert (draw.train, draw.val) == few_shot_split(dataset.train, dataset.val, 2, 1)
    # The file is the source of truth once it exists: a draw edited there is what is used.
    saved["train"] = saved["train"][:1]
    path.write_text(json.dumps(saved))
    again = draw_few_shot(dataset, 2, 1)
    assert again.reused and [s.to_json() for s in again.train] == saved["train"]


def test_same_seed_gives_the_same_file_on_another_copy_of_the_dataset(tmp_path):
    a, b = _fixture(tmp_path / "a"), _fixture(tmp_path / "b")
    fa, fb = draw_few_shot(a, 2, 3).path, draw_few_shot(b, 2, 3).path
    assert fa != fb and fa.read_text() == fb.read_text()
    assert draw_few_shot(a, 2, 4).path.read_text() != fa.read_text()


def test_a_read_only_dataset_folder_falls_back_to_the_cache_dir(tmp_path, clipfit_cache, monkeypatch):
    dataset = _fixture(tmp_path)
    folder = tmp_path / "dtd"
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    os.chmod(folder, 0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the dataset folder refuse as a read-only mount would
        writable = sampling._writable
        monkeypatch.setattr(sampling, "_writable", lambda d: not d.is_relative_to(folder) and writable(d))
    try:
        draw = draw_few_shot(dataset, 2, 1)
        assert draw.path.is_relative_to(clipfit_cache) and draw.path.name == "shot_2-seed_1.json"
        assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
        assert draw_few_shot(dataset, 2, 1).reused
    finally:
        os.chmod(folder, 0o755)


def test_a_few_shot_file_from_another_split_is_refused(tmp_path):
    dataset = _fixture(tmp_path)
    path = draw_few_shot(dataset, 2, 1).path
    saved = json.loads(path.read_text())
    saved["train"][0][0] = "banded/not_in_the_split.jpg"
    path.write_text(json.dumps(saved))
    with pytest.raises(DataError, match=r"does not match the current split of 'dtd'.*delete it"):
        draw_few_shot(dataset, 2, 1)


def test_imagenet_saves_train_only_and_keeps_its_val(tmp_path):
    dataset = _fixture(tmp_path, "imagenet")
    draw = draw_few_shot(dataset, 2, 1)
    assert json.loads(draw.path.read_text())["val"] == []
    assert len(draw.train) == 6 and draw.val == dataset.val
    assert draw_few_shot(dataset, 2, 1).train == draw.train


def test_generated_data_is_not_saved():
    draw = draw_few_shot(load_dataset("shapes"), 1, 1)
    assert draw.path is None and len(draw.train) == 64
