"""The checks behind the bad-input suite (tests/integration/test_bad_input.py), one owner each.

Errors from DataLoader workers, 16-bit images, what the image reader refuses, templates and prompt
lengths, a diverging loss, typed config records, the image check before any model work, and a
split file's labels read without allocating by their size.
"""

from __future__ import annotations

import math
import os
import tracemalloc

import numpy as np
import pytest
import torch
from fixture_trees import bomb_png, image
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from clipfit.config import RunConfig
from clipfit.data.base import DataError, FileReader, Sample, check_relative, to_rgb
from clipfit.data.splits import classnames_from_samples
from clipfit.data.verify import check_images, find_bad_images
from clipfit.errors import ConfigError
from clipfit.objective import TrainingDiverged
from clipfit.prompts import check_template, same_prompt_names, tokenize
from clipfit.recipes import apply_recipe, get_recipe

# ----------------------------------------------------------------------------- errors from DataLoader workers


class _Broken(TorchDataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise DataError(f"cannot read image /data/{index}.jpg: not an image PIL can read")


def test_a_data_error_raised_in_a_worker_keeps_its_one_line_message():
    with pytest.raises(DataError) as caught:
        next(iter(DataLoader(_Broken(), batch_size=None, num_workers=1)))
    assert str(caught.value) == "cannot read image /data/0.jpg: not an image PIL can read"


def test_other_messages_are_left_as_they_are():
    message = "Caught DataError in DataLoader worker process 0.\nsomething else"
    assert str(DataError(message)) == message
    assert str(ConfigError("plain")) == "plain"


# ----------------------------------------------------------------------------- images


def test_a_16_bit_png_is_scaled_not_clipped_to_white(tmp_path):
    path = tmp_path / "deep.png"
    values = np.array([[0, 256, 40000, 65535]], dtype=np.uint16).repeat(4, axis=0)
    Image.fromarray(values).save(path)  # a 16-bit greyscale PNG (mode I;16 or I once read back)
    assert Image.open(path).mode.startswith("I")
    rgb = np.asarray(FileReader(tmp_path)("deep.png"))
    assert rgb.shape == (4, 4, 3)
    assert rgb[0, :, 0].tolist() == [0, 1, 156, 255]  # value >> 8; PIL's own convert gives [0, 255, 255, 255]
    assert to_rgb(Image.new("RGB", (2, 2), (10, 20, 30))).getpixel((0, 0)) == (10, 20, 30)


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("a/b.jpg", None),
        ("a/..b.jpg", None),
        ("../x.jpg", "goes up with '..'"),
        ("a/../../x.jpg", "goes up with '..'"),
        ("..\\..\\x.jpg", "goes up with '..'"),
        ("/etc/passwd", "absolute"),
        ("", "empty"),
        (None, "not a string"),
        ("a\0b", "NUL"),
    ],
)
def test_split_paths_stay_inside_the_image_folder(path, why):
    result = check_relative(path)
    assert (result is None) if why is None else (why in result)


def test_the_reader_refuses_what_it_must_not_open(tmp_path):
    root = tmp_path / "photos"
    image(root / "cat" / "ok.png")
    (root / "cat" / "empty.png").write_bytes(b"")
    (root / "cat" / "folder.png").mkdir()
    os.mkfifo(root / "cat" / "pipe.png")
    image(tmp_path / "outside.png")
    (root / "cat" / "link.png").symlink_to(tmp_path / "outside.png")
    (root / "cat" / "inside.png").symlink_to(root / "cat" / "ok.png")
    folder = FileReader(root, confine_links=True)
    assert folder.check("cat/ok.png") is None and folder.check("cat/inside.png") is None
    assert "not an image PIL can read" in folder.check("cat/empty.png")
    assert folder.check("cat/folder.png") == "a folder, not an image file"
    assert "not a regular file" in folder.check("cat/pipe.png")  # never opened: that would block
    assert "outside the dataset folder" in folder.check("cat/link.png")
    assert folder.check("cat/missing.png") == "not found"
    assert "goes up" in folder.check("../outside.png")
    with pytest.raises(DataError, match=r"cannot read image .*link.png: a link to"):
        folder("cat/link.png")
    benchmark = FileReader(root)  # links are followed (a benchmark's image folders are often links)
    assert benchmark.check("cat/link.png") is None
    csv = FileReader(root, any_path=True)  # a CSV names files anywhere
    assert csv.check("../outside.png") is None and csv.check(str(tmp_path / "outside.png")) is None


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    from PIL import ImageFile

    def decode(*_):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)  # nothing near 10^10 pixels may be allocated
    bomb_png(tmp_path / "bomb.png")
    why = FileReader(tmp_path).check("bomb.png")
    assert "declared size is too large to decode safely" in why
    with pytest.raises(DataError, match="too large to decode safely") as caught:
        FileReader(tmp_path)("bomb.png")
    assert isinstance(caught.value.__cause__, Image.DecompressionBombError)  # PIL refused it on opening


def test_every_bad_image_is_listed_at_once_or_skipped(tmp_path):
    for i in range(30):
        image(tmp_path / f"{i}.png", i)
    for i in range(0, 30, 2):
        (tmp_path / f"{i}.png").write_bytes(b"broken")
    reader = FileReader(tmp_path)
    samples = [Sample(f"{i}.png", i % 3, "x") for i in range(30)]
    bad = find_bad_images([s.path for s in samples] * 2, reader)  # each path checked once, in list order
    assert [b.path for b in bad] == [f"{i}.png" for i in range(0, 30, 2)]
    with pytest.raises(DataError) as caught:
        check_images({"train": samples[:10], "test": samples[10:]}, reader, "mine", skip=False)
    message = str(caught.value)
    assert "15 images cannot be read (5 of 10 train, 10 of 20 test)" in message
    assert "0.png: not an image PIL can read" in message and "... and 5 more" in message
    assert "--skip-bad-images" in message
    assert len(check_images({"all": samples}, reader, "mine", skip=True)) == 15
    assert check_images({"all": samples[1::2]}, reader, "mine", skip=False) == []


# ----------------------------------------------------------------------------- class names and split labels


def test_class_names_that_give_the_same_prompt_are_found():
    assert same_prompt_names(["dog", "dog_", "cat", "Big_Cat", "big cat"]) == [["dog", "dog_"], ["Big_Cat", "big cat"]]
    assert same_prompt_names(["dog", "cat"]) == []


@pytest.mark.parametrize("label", [10**6, 10**15])
def test_a_huge_label_is_refused_without_allocating_by_its_size(label):
    samples = [Sample("a.jpg", 0, "a"), Sample("b.jpg", label, "b")]
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=f"the largest is {label}"):
            classnames_from_samples(samples, "split file x.json")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100_000  # a list or dict of 10^6 labels would take megabytes (10^15: a MemoryError)
    with pytest.raises(DataError, match="label -3 is negative"):
        classnames_from_samples([Sample("a.jpg", -3, "a")], "split file x.json")


# ----------------------------------------------------------------------------- templates and prompt lengths


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("a photo of a {}.", None),
        ("{} with {{braces}}", None),
        ("a {} photo of {", "stray brace"),
        ("a photo of a }", "stray brace"),
        ("a photo of a {name}.", "the field {name}"),
        ("a {0} photo", "the field {0}"),
        ("a {} photo {.x}", "the field {.x}"),
        ("a {:>9} photo", "the field {:>9}"),
        ("a {!r} photo", "the field {!r}"),
        ("a photo", "has 0"),
        ("{} and {}", "has 2"),
    ],
)
def test_a_template_is_text_with_one_bare_slot(template, fragment):
    if fragment is None:
        assert check_template(template) == template
        template.format("dog")  # formats without error
    else:
        with pytest.raises(ConfigError, match=f"exactly one '{{}}'.*{fragment.replace('{', '[{]')}"):
            check_template(template)


def test_a_prompt_longer_than_the_context_is_refused_not_cut(tiny):
    tokenizer = tiny.tokenizer
    short = ["a photo of a dog.", "a photo of a cat."]
    assert torch.equal(tokenize(tokenizer, short), tokenizer(short))
    long = ["a photo " * 40 + "of a dog.", "a photo of a cat."]
    with pytest.raises(ConfigError, match=r"'a photo a photo .*' is \d+ tokens long, but the model reads only 77"):
        tokenize(tokenizer, long)
    with pytest.raises(ConfigError, match=r"\(1 of 2 prompts are too long\)"):
        tokenize(tokenizer, long)


# ----------------------------------------------------------------------------- a diverging loss


def test_training_stops_at_the_first_non_finite_loss(tiny, shapes_task, make_trainer, tmp_path):
    trained = apply_recipe(tiny.model, get_recipe("clipfit"))
    trainer = make_trainer(tiny, trained, shapes_task(), lr=math.nan, epochs=2, run_dir=tmp_path / "run")
    # step 1's loss is finite; its update with a NaN learning rate makes every trained tensor NaN
    with pytest.raises(
        TrainingDiverged, match=r"diverged at step 2 \(epoch 1, learning rate nan\): the loss is nan"
    ) as caught:
        trainer.fit()
    assert "lower --lr" in str(caught.value)
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()  # no NaN checkpoint was written


# ----------------------------------------------------------------------------- config records


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["optim"].update(lr="fast"), "optim.lr: expected a number or null, got 'fast'"),
        (lambda d: d["optim"].update(epochs=2.5), "optim.epochs: expected an integer or null, got 2.5"),
        (lambda d: d.update(seed=True), "seed: expected an integer, got True"),
        (lambda d: d["data"].update(dataset=None), "data.dataset: expected a string, got None"),
        (lambda d: d.update(model=[]), "model: expected a JSON object"),
    ],
)
def test_a_config_record_with_a_wrong_type_is_refused_by_name(change, message):
    record = RunConfig().to_dict()
    change(record)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunConfig.from_dict(record)


def test_a_config_record_keeps_its_values():
    cfg = RunConfig()
    cfg.optim.lr, cfg.data.skip_bad_images = 3, True
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg and isinstance(again.optim.lr, float)
