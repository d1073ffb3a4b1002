"""The preprocessed test-set cache: identical accuracies, nothing decoded the second time, and the bad cases.

Every test evaluates a generated ``folder:`` dataset of small JPEGs (a few sizes, so resizing and cropping do
something) with a random-init clipfit-tiny (32 px input), on the CPU, in the test's own cache directory.
Decodes are counted at the image reader (``FileReader.__call__``, in process: no DataLoader workers).
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipfit.data import transforms
from clipfit.data.base import FileReader
from clipfit.data.cache_entries import CRCS, MANIFEST, PIXELS, _Lock, cache_entries
from clipfit.data.decoding import GpuJpegDecoder, _decoded_batches, jpeg_kind, pil_pixels
from clipfit.data.loaders import eval_loader
from clipfit.data.registry import load_dataset
from clipfit.data.sampling import class_subsets
from clipfit.data.testcache import CachePolicy, TestImages, parse_size
from clipfit.data.transforms import normalise, normalise_table
from clipfit.errors import ConfigError
from clipfit.evaluate import EvalSettings, evaluate_subsets, image_features
from clipfit.models import PreprocessSpec

CPU = torch.device("cpu")
CLASSES, PER_CLASS = 4, 10  # the folder split keeps 3 test images per class: 12 test images


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for c in range(CLASSES):
        for i in range(PER_CLASS):
            path = root / f"class{c}" / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 255, (30 + 3 * i, 40 + c, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
    return load_dataset(f"folder:{root}")


@pytest.fixture(autouse=True)
def logs_reach_caplog(monkeypatch):
    """clipfit's console setup (by earlier CLI tests) stops its records at the "clipfit" logger."""
    monkeypatch.setattr(logging.getLogger("clipfit"), "propagate", True)


@pytest.fixture
def decodes(monkeypatch):
    """How many images the reader decoded since the last reset (``decodes.reset()``)."""

    class Count:
        n = 0

        def reset(self) -> None:
            self.n = 0

    count = Count()
    read = FileReader.__call__

    def counting(self, path):
        count.n += 1
        return read(self, path)

    monkeypatch.setattr(FileReader, "__call__", counting)
    return count


def _evaluate(tiny, dataset, policy=None, **settings):
    subsets = class_subsets(dataset, dataset.train, "base2new")
    values = {"batch_size": 5, "num_workers": 0, "cache": policy or CachePolicy()} | settings
    return evaluate_subsets(tiny, dataset, subsets, dataset.template, EvalSettings(CPU, **values))


def _entry(tiny, dataset) -> Path:
    folder = TestImages.of(dataset, tiny.preprocess).folder
    assert folder is not None
    return folder


def test_uint8_pixels_and_the_table_give_the_test_transform_bit_for_bit():
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((37, 50), (64, 41))]
    for spec in (
        PreprocessSpec(32, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711), "bicubic"),
        PreprocessSpec(24, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear"),
    ):
        expected = torch.stack([transforms.test_transform(spec)(image) for image in images])
        pixels = torch.stack([transforms.test_pixels(spec)(image) for image in images])
        assert pixels.dtype == torch.uint8
        assert torch.equal(normalise(pixels, normalise_table(spec)), expected)


def test_the_second_evaluation_decodes_nothing_and_gives_identical_accuracies(tiny, dataset, decodes):
    uncached = _evaluate(tiny, dataset, CachePolicy(enabled=False))
    assert decodes.n == len(dataset.test)  # the base and the new test images
    assert not CachePolicy().root.exists()  # off writes nothing

    decodes.reset()
    first = _evaluate(tiny, dataset)
    assert decodes.n == len(dataset.test)  # the base evaluation decoded the whole split into the entry, new read it
    decodes.reset()
    second = _evaluate(tiny, dataset)
    assert decodes.n == 0
    assert first == second == uncached  # every digit

    # the features themselves: the cache against the DataLoader + test_transform path of before
    images = TestImages.of(dataset, tiny.preprocess)
    old, old_labels = image_features(tiny.model, eval_loader(dataset.test, dataset.reader, tiny.preprocess, 5), CPU)
    new, new_labels = image_features(tiny.model, images.batches(dataset.test, 5, CPU), CPU)
    assert torch.equal(old, new) and torch.equal(old_labels, new_labels)
    assert images.stats["cached"] == len(dataset.test) and images.stats["decoded"] == 0


def test_a_changed_image_or_preprocessing_is_another_entry(tiny, dataset, decodes):
    before = _entry(tiny, dataset)
    _evaluate(tiny, dataset)
    assert before.is_dir()
    other = PreprocessSpec(24, tiny.preprocess.mean, tiny.preprocess.std, tiny.preprocess.interpolation)
    bilinear = PreprocessSpec(32, tiny.preprocess.mean, tiny.preprocess.std, "bilinear")
    folders = {before} | {TestImages.of(dataset, spec).folder for spec in (other, bilinear)}
    assert len(folders) == 3
    assert TestImages.of(dataset, tiny.preprocess, CachePolicy(decoder="nvjpeg")).folder not in folders

    # an image of the test split rewritten: another key, so a fresh decode (and the old entry ages out)
    path = dataset.reader.root / dataset.test[0].path
    Image.open(path).rotate(90).save(path)
    decodes.reset()
    _evaluate(tiny, dataset)
    assert decodes.n == len(dataset.test)
    assert _entry(tiny, dataset) != before


@pytest.mark.parametrize("damage", ["no manifest", "short pixels", "other key", "crc table", "bad json"])
def test_a_partial_or_corrupt_entry_is_rebuilt_never_read(tiny, dataset, decodes, damage, caplog):
    expected = _evaluate(tiny, dataset)
    folder = _entry(tiny, dataset)
    if damage == "no manifest":  # what a copy interrupted before its last file looks like
        (folder / MANIFEST).unlink()
    elif damage == "short pixels":
        with open(folder / PIXELS, "r+b") as f:
            f.truncate(100)
    elif damage == "other key":
        manifest = json.loads((folder / MANIFEST).read_text())
        manifest["key"]["size"] = 999
        (folder / MANIFEST).write_text(json.dumps(manifest))
    elif damage == "crc table":
        (folder / CRCS).write_bytes(b"\0" * (folder / CRCS).stat().st_size)
    else:
        (folder / MANIFEST).write_text("{not json")
    decodes.reset()
    with caplog.at_level(logging.WARNING, logger="clipfit.data.testcache"):
        assert _evaluate(tiny, dataset) == expected
    assert decodes.n == len(dataset.test)  # rebuilt
    assert "removing" in caplog.text and "rebuilt" in caplog.text
    assert TestImages.of(dataset, tiny.preprocess).open() is not None
    decodes.reset()
    assert _evaluate(tiny, dataset) == expected and decodes.n == 0


def test_a_row_that_fails_its_checksum_is_decoded_and_the_entry_dropped(tiny, dataset, decodes, caplog):
    expected = _evaluate(tiny, dataset)
    folder = _entry(tiny, dataset)
    with open(folder / PIXELS, "r+b") as f:  # flip one byte of row 3
        f.seek(3 * 3 * 32 * 32 + 17)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    images = TestImages.of(dataset, tiny.preprocess)
    decodes.reset()
    with caplog.at_level(logging.WARNING, logger="clipfit.data.testcache"):
        reference = TestImages(tiny.preprocess, dataset.reader).batches(dataset.test, 5, CPU)
        for (a, _), (b, _) in zip(images.batches(dataset.test, 5, CPU), reference, strict=True):
            assert torch.equal(a, b)
    assert decodes.n == 1 + len(dataset.test)  # the damaged row, then the reference
    assert images.stats["corrupt"] == 1 and "failed their checksum" in caplog.text
    assert not folder.exists()  # dropped: the next evaluation builds it again
    decodes.reset()
    assert _evaluate(tiny, dataset) == expected and decodes.n == len(dataset.test)
    decodes.reset()
    assert _evaluate(tiny, dataset) == expected and decodes.n == 0


def test_a_second_builder_decodes_while_the_first_holds_the_lock(tiny, dataset, decodes):
    expected = _evaluate(tiny, dataset, CachePolicy(enabled=False))
    folder = _entry(tiny, dataset)
    first = TestImages.of(dataset, tiny.preprocess)
    batches = iter(first.batches(dataset.test, 5, CPU))
    next(batches)  # the first builder is under way: it holds the lock, its entry is a temporary folder
    assert not folder.exists() and list(folder.parent.glob(f".{folder.name}.*.tmp"))

    decodes.reset()
    assert _evaluate(tiny, dataset) == expected  # the second one evaluates from the images meanwhile
    assert decodes.n == len(dataset.test) and not folder.exists()

    for _ in batches:  # the first one finishes and renames its entry into place
        pass
    assert first.stats["built"] == 1 and first.open() is not None
    decodes.reset()
    assert _evaluate(tiny, dataset) == expected and decodes.n == 0


def test_two_builders_that_miss_each_others_lock_keep_one_entry(tiny, dataset, monkeypatch):
    monkeypatch.setattr(_Lock, "acquire", lambda self: True)  # e.g. a filesystem without working locks
    a, b = TestImages.of(dataset, tiny.preprocess), TestImages.of(dataset, tiny.preprocess)
    first, second = iter(a.batches(dataset.test, 5, CPU)), iter(b.batches(dataset.test, 5, CPU))
    next(first), next(second)
    list(first)
    list(second)  # its rename finds the first one's entry: it discards its copy
    assert (a.stats["built"], b.stats["built"]) == (1, 0)
    folder = _entry(tiny, dataset)
    assert a.open() is not None and not list(folder.parent.glob(".*.tmp"))


def test_an_abandoned_evaluation_leaves_no_entry_and_no_temporary_files(tiny, dataset):
    images = TestImages.of(dataset, tiny.preprocess)
    batches = iter(images.batches(dataset.test, 5, CPU))
    next(batches)
    batches.close()  # e.g. an exception in the model
    folder = _entry(tiny, dataset)
    assert not folder.exists() and not list(folder.parent.glob(".*.tmp"))


def test_a_full_disk_while_building_costs_the_entry_not_the_evaluation(tiny, dataset, monkeypatch, caplog):
    expected = _evaluate(tiny, dataset, CachePolicy(enabled=False))

    def full(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with caplog.at_level(logging.WARNING, logger="clipfit.data.testcache"):
        assert _evaluate(tiny, dataset) == expected
    assert "no space left" in caplog.text
    folder = _entry(tiny, dataset)
    assert not folder.exists() and not list(folder.parent.glob(".*.tmp"))


def test_the_size_cap_evicts_the_least_recently_used_entry_and_refuses_a_too_large_one(tiny, dataset, decodes):
    one = len(dataset.test) * (3 * 32 * 32 + 4)
    other = PreprocessSpec(24, tiny.preprocess.mean, tiny.preprocess.std, tiny.preprocess.interpolation)
    policy = CachePolicy(max_bytes=one + 100)
    TestImages.of(dataset, tiny.preprocess, policy).batches(dataset.test, 5, CPU).__iter__().__next__()
    list(TestImages.of(dataset, tiny.preprocess, policy).batches(dataset.test, 5, CPU))
    list(TestImages.of(dataset, other, policy).batches(dataset.test, 5, CPU))  # needs room: evicts the 32 px one
    assert [folder.name for folder, _, _ in cache_entries()] == [TestImages.of(dataset, other).folder.name]

    small = CachePolicy(max_bytes=one // 2)
    images = TestImages.of(dataset, tiny.preprocess, small)
    list(images.batches(dataset.test, 5, CPU))
    assert images.stats["built"] == 0 and not images.folder.exists()


def test_under_torchrun_processes_read_their_shards_but_build_nothing(tiny, dataset, decodes):
    images = TestImages.of(dataset, tiny.preprocess)
    shards = [list(images.batches(dataset.test, 5, CPU, rank=r, world_size=2)) for r in range(2)]
    assert images.stats["built"] == 0 and not images.folder.exists()
    list(images.batches(dataset.test, 5, CPU))  # a single process builds it
    decodes.reset()
    cached = [list(images.batches(dataset.test, 5, CPU, rank=r, world_size=2)) for r in range(2)]
    assert decodes.n == 0
    for a, b in zip(shards, cached, strict=True):
        assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True))


def test_samples_in_another_order_or_outside_the_test_split(tiny, dataset, decodes):
    images = TestImages.of(dataset, tiny.preprocess)
    shuffled = dataset.test[::-1]
    first = list(images.batches(shuffled, 5, CPU))  # builds first, then reads in the samples' order
    assert images.stats["built"] == 1
    reference = list(TestImages(tiny.preprocess, dataset.reader).batches(shuffled, 5, CPU))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, reference, strict=True))
    decodes.reset()
    list(images.batches(dataset.train[:3], 5, CPU))  # not test images: decoded, nothing written
    assert decodes.n == 3


def test_cache_settings_are_parsed_with_one_line_errors(monkeypatch):
    assert CachePolicy.parse("off").enabled is False
    assert CachePolicy.parse("20GB").max_bytes == 20 * 10**9 and CachePolicy.parse("1.5GiB").max_bytes == 1610612736
    assert parse_size("500MB") == 500 * 10**6
    monkeypatch.setenv("CLIPFIT_EVAL_CACHE", "3GB")
    monkeypatch.setenv("CLIPFIT_EVAL_DECODER", "nvjpeg")
    assert CachePolicy.parse() == CachePolicy(True, 3 * 10**9, "nvjpeg")
    assert CachePolicy.parse("on").max_bytes == 64 * 10**9  # the flag wins over the environment
    for value, decoder in (("lots", None), ("on", "cuda")):
        with pytest.raises(ConfigError) as error:
            CachePolicy.parse(value, decoder)
        assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------- the GPU decoder


def _write(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(2)
    rgb = Image.fromarray(rng.integers(0, 255, (30, 44, 3), dtype=np.uint8))
    files = {
        "baseline.jpg": lambda p: rgb.save(p, "JPEG"),
        "progressive.jpg": lambda p: rgb.save(p, "JPEG", progressive=True),
        "grayscale.jpg": lambda p: rgb.convert("L").save(p, "JPEG"),
        "cmyk.jpg": lambda p: rgb.convert("CMYK").save(p, "JPEG"),
        "image.png": lambda p: rgb.save(p, "PNG"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, save in files.items():
        save(folder / name)
    return {name: folder / name for name in files}


def test_jpeg_kind_reads_what_the_gpu_decoder_can_take(tmp_path):
    files = _write(tmp_path)
    kinds = {name: jpeg_kind(path.read_bytes()) for name, path in files.items()}
    assert kinds == {
        "baseline.jpg": "ycbcr",
        "progressive.jpg": "ycbcr",
        "grayscale.jpg": "grayscale",
        "cmyk.jpg": "cmyk",
        "image.png": "not jpeg",
    }
    assert jpeg_kind(files["baseline.jpg"].read_bytes()[:20]) == "truncated"


def test_the_gpu_decoder_falls_back_to_pil_for_what_it_cannot_read(tmp_path):
    from torchvision.io import decode_jpeg

    from clipfit.data.base import Sample

    files = _write(tmp_path)
    spec = PreprocessSpec(16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")
    samples = [Sample(name, 0, "x") for name in files]
    seen: list[int] = []

    def fake(data, device, mode):  # stands in for nvjpeg: torchvision's CPU decoder, recording batch sizes
        seen.append(len(data))
        return [decode_jpeg(d, mode=mode) for d in data]

    stats: dict = {}
    from collections import Counter

    stats = Counter()
    gpu = GpuJpegDecoder(spec, CPU, decode=fake, stats=stats)
    out = torch.cat([p for _, p in _decoded_batches(samples, FileReader(tmp_path), spec, 8, 0, gpu, stats)])
    assert seen == [2]  # one batch with the two YCbCr JPEGs; PNG, grayscale and CMYK went through PIL
    assert stats == {"gpu": 2, "decoded": 3}
    pil = torch.stack([transforms.test_pixels(spec)(FileReader(tmp_path)(s.path)) for s in samples])
    assert torch.equal(out[2:], pil[2:])  # the fallbacks are exactly the test transform's pixels
    assert out.shape == (5, 3, 16, 16) and (out[:2].float() - pil[:2].float()).abs().mean() < 8  # close, not equal

    def failing(data, device, mode):  # the batch fails, then the progressive JPEG alone
        if len(data) > 1 or data[0].numel() == files["progressive.jpg"].stat().st_size:
            raise RuntimeError("nvjpeg cannot decode this")
        return fake(data, device, mode)

    stats = Counter()
    gpu = GpuJpegDecoder(spec, CPU, decode=failing, stats=stats)
    out = torch.cat([p for _, p in _decoded_batches(samples, FileReader(tmp_path), spec, 8, 0, gpu, stats)])
    assert stats == {"gpu": 1, "fallback": 1, "decoded": 3}
    assert torch.equal(out[1], pil_pixels(files["progressive.jpg"].read_bytes(), spec)) and torch.equal(out[1], pil[1])


def test_a_killed_builders_temporary_folder_is_cleared_only_once_it_is_stale(tiny, dataset):
    folder = _entry(tiny, dataset)
    folder.parent.mkdir(parents=True)
    old, live = (folder.parent / f".{folder.name}.{name}.tmp" for name in ("dead", "live"))
    for tmp in (old, live):
        tmp.mkdir()
        (tmp / PIXELS).write_bytes(b"\0" * 10)
    hour_ago = os.path.getmtime(old / PIXELS) - 2 * 3600
    os.utime(old / PIXELS, (hour_ago, hour_ago))
    _evaluate(tiny, dataset)
    assert not old.exists() and live.exists()  # a live builder writes all the time: its folder stays
    assert TestImages.of(dataset, tiny.preprocess).open() is not None
