"""The shapes world is deterministic, compositional, and shifted between its two domains."""

from __future__ import annotations

import numpy as np
import pytest

from clipfit.data import shapes
from clipfit.data.registry import load_dataset


def test_images_are_a_function_of_the_seed():
    labels = np.arange(64)
    a = shapes.render(labels, "target", np.random.default_rng(3))
    b = shapes.render(labels, "target", np.random.default_rng(3))
    c = shapes.render(labels, "target", np.random.default_rng(4))
    assert a.shape == (64, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_splits_are_fixed_and_disjoint_by_seed():
    train, _ = shapes.split_images("target", "train")
    test, labels = shapes.split_images("target", "test")
    assert len(train) == 64 * shapes.SPLIT_SIZES["train"] and len(test) == 64 * shapes.SPLIT_SIZES["test"]
    assert np.bincount(labels).tolist() == [shapes.SPLIT_SIZES["test"]] * 64
    assert not np.array_equal(train[:10], test[:10])


def test_new_classes_are_shapes_the_base_classes_never_show():
    base, new = shapes.CLASS_CELLS[:32], shapes.CLASS_CELLS[32:]
    assert len(set(shapes.CLASS_CELLS)) == 64
    assert {s for _, s in base}.isdisjoint({s for _, s in new})  # new concepts, as in the benchmarks
    assert {c for c, _ in base} == {c for c, _ in new} == set(range(8))  # in the same colours
    new_words = {shapes.SHAPES[s] for _, s in new}
    assert not any(word in name for name in shapes.CLASSNAMES[:32] for word in new_words)


def test_target_domain_is_shifted_from_the_pretraining_domain():
    labels = np.repeat(np.arange(64), 4)
    pre = shapes.render(labels, "pretrain", np.random.default_rng(0)).astype(float)
    tgt = shapes.render(labels, "target", np.random.default_rng(0)).astype(float)
    # lighter, noisier backgrounds: brighter corners and more pixel variance around them
    assert tgt[:, :2, :2].mean() > pre[:, :2, :2].mean() + 20
    assert tgt[:, :2, :2].std() > pre[:, :2, :2].std()


def test_registered_dataset_reads_images_by_id():
    dataset = load_dataset("shapes")
    assert dataset.classnames[0] == "red circle" and len(dataset.classnames) == 64
    image = dataset.reader(dataset.test[0].path)
    assert image.size == (32, 32) and image.mode == "RGB"
    assert dataset.train_crop_scale == (0.5, 1.0)


def test_pretraining_draws_classes_in_a_fixed_cell_order():
    # The shipped weights were drawn over the colour x shape checkerboard (even cells first); the
    # mapping to today's labels keeps them reproducible whatever the label order.
    from clipfit.pretrain_shapes import _draw_order

    order = _draw_order()
    assert sorted(order.tolist()) == list(range(len(shapes.CLASSNAMES)))
    cells = [shapes.CLASS_CELLS[label] for label in order]
    assert all(sum(cell) % 2 == 0 for cell in cells[:32]) and all(sum(cell) % 2 == 1 for cell in cells[32:])
    assert cells[:3] == [(0, 0), (0, 2), (0, 4)] and cells[32] == (0, 1)


def test_remeasure_needs_an_existing_weights_file(tmp_path):
    from clipfit.pretrain_shapes import main

    with pytest.raises(SystemExit, match="--remeasure: no weights file at"):
        main(["--remeasure", "--out", str(tmp_path / "missing.safetensors")])
