"""Training batches are a function of (seed, epoch, position): shardable and resumable; their crops are Dassl's."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from clipfit.data import transforms
from clipfit.data.base import FileReader, Sample
from clipfit.data.loaders import TRAIN_CACHES, AugmentedImages, EpochBatches, TrainBatches, mix_seed
from clipfit.data.registry import load_dataset
from clipfit.data.sampling import few_shot_split
from clipfit.data.transforms import image_tensor, train_augment
from clipfit.errors import ConfigError
from clipfit.models import PreprocessSpec

SPEC = PreprocessSpec(size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), interpolation="bicubic")


def test_two_ranks_together_see_exactly_the_single_process_batches():
    single = list(EpochBatches(70, 8, seed=1))
    ranks = [list(EpochBatches(70, 8, seed=1, rank=r, world_size=2)) for r in range(2)]
    assert len(single) == 70 // 8  # the incomplete last batch is dropped
    for b, batch in enumerate(single):
        assert ranks[0][b] + ranks[1][b] == batch


def test_epochs_reshuffle_and_small_sets_keep_their_last_batch():
    sampler = EpochBatches(40, 8, seed=1)
    first = [k for batch in sampler for k in batch]
    sampler.set_epoch(1)
    second = [k for batch in sampler for k in batch]
    assert sorted(i for i, _ in first) == list(range(40)) and first != second
    small = EpochBatches(5, 8, seed=1)
    assert len(small) == 1 and len(next(iter(small))) == 5


def test_augmentation_depends_only_on_its_seed():
    image = torch.randint(0, 255, (3, 20, 24), dtype=torch.uint8)
    a = train_augment(image, SPEC, (0.08, 1.0), torch.Generator().manual_seed(5))
    b = train_augment(image, SPEC, (0.08, 1.0), torch.Generator().manual_seed(5))
    c = train_augment(image, SPEC, (0.08, 1.0), torch.Generator().manual_seed(6))
    assert a.shape == (3, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(0)
    d = AugmentedImages([image], [0], SPEC, (0.08, 1.0))[(0, 5)][0]
    torch.manual_seed(1)  # the global generator plays no part
    assert torch.equal(d, AugmentedImages([image], [0], SPEC, (0.08, 1.0))[(0, 5)][0])


def test_mix_seed_spreads_neighbouring_inputs():
    seeds = {mix_seed(1, e, i) for e in range(3) for i in range(100)}
    assert len(seeds) == 300 and all(0 <= s < 2**63 for s in seeds)


def test_global_batch_size_is_the_union_of_the_rank_slices():
    for n, batch in ((100, 32), (21, 32), (32, 32)):
        ranks = [EpochBatches(n, batch, seed=3, rank=r, world_size=2) for r in range(2)]
        for batches in zip(*ranks, strict=True):
            assert sum(len(b) for b in batches) == ranks[0].global_batch_size
    assert EpochBatches(100, 32, seed=3).global_batch_size == 32
    assert EpochBatches(21, 32, seed=3).global_batch_size == 21


def test_a_small_set_is_spread_over_every_process():
    # 10 images, batch 32, 8 processes: one incomplete batch cut 2,2,1,1,1,1,1,1 (never an empty
    # shard, which would crash that process while the others wait in the all-reduce)
    single = next(iter(EpochBatches(10, 32, seed=1)))
    shards = [next(iter(EpochBatches(10, 32, seed=1, rank=r, world_size=8))) for r in range(8)]
    assert [len(s) for s in shards] == [2, 2, 1, 1, 1, 1, 1, 1]
    assert [k for shard in shards for k in shard] == single
    with pytest.raises(ConfigError, match="5 training images cannot be spread over 8 processes"):
        EpochBatches(5, 32, seed=1, rank=0, world_size=8)


# ----------------------------------------------------------------------------- where views are cropped from

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
CLIP = PreprocessSpec(size=224, mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic")
DASSL_SCALE = (0.08, 1.0)


def _photo(path: Path, seed: int = 0) -> Path:
    """A 500x375 JPEG (ImageNet's most common size) with smooth structure and grain, like a photo's."""
    rng = np.random.default_rng(seed)
    field = rng.normal(size=(48, 64, 3)).cumsum(0).cumsum(1)
    smooth = Image.fromarray(((field - field.min()) / np.ptp(field) * 255).astype(np.uint8)).resize((500, 375))
    grain = np.asarray(smooth, dtype=np.int16) + rng.integers(-30, 30, (375, 500, 3))
    Image.fromarray(grain.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def _plan(n: int, batch_size: int, seed: int, count: int) -> list[tuple[int, int]]:
    """The (index, view seed) pairs of a run's first ``count`` batches, in order (what TrainBatches.first draws)."""
    sampler, plan, epoch = EpochBatches(n, batch_size, seed), [], 0
    while len(plan) < count:
        sampler.set_epoch(epoch)
        plan.extend(sampler.global_batches())
        epoch += 1
    return [key for batch in plan[:count] for key in batch]


def test_a_default_view_is_dassls_crop_of_the_original_image(tmp_path):
    paths = [_photo(tmp_path / f"{i}.jpg", seed=i) for i in range(2)]
    samples = [Sample(p.name, i, f"class {i}") for i, p in enumerate(paths)]
    batches = TrainBatches(samples, FileReader(tmp_path), CLIP, DASSL_SCALE, batch_size=2, seed=3)
    views = torch.cat([images for images, _ in batches.first(3)])
    dassl = T.Compose(
        [
            T.RandomResizedCrop(224, scale=DASSL_SCALE, interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(CLIP.mean, CLIP.std),
        ]
    )
    levels = torch.tensor(CLIP.std).view(3, 1, 1) * 255.0  # normalised units -> 8-bit grey levels
    for view, (index, view_seed) in zip(views, _plan(2, 2, 3, 3), strict=True):
        original = Image.open(paths[index]).convert("RGB")
        # the same generator draws on the original pixels: exactly the view
        expected = train_augment(image_tensor(original), CLIP, DASSL_SCALE, torch.Generator().manual_seed(view_seed))
        assert torch.equal(view, expected)
        # and Dassl's own transform, its global generator seeded like the view's, cuts the same box and flip:
        # what is left is PIL's resampling against torch's (a few grey levels at most, 0.2 on average)
        with torch.random.fork_rng():
            torch.manual_seed(view_seed)
            reference = dassl(original)
        difference = ((view - reference) * levels).abs()
        assert difference.mean() < 0.5 and difference.max() <= 8


def test_the_default_views_do_not_depend_on_the_workers(tmp_path):
    paths = [_photo(tmp_path / f"{i}.jpg", seed=i) for i in range(4)]
    samples = [Sample(p.name, i % 2, f"class {i % 2}") for i, p in enumerate(paths)]
    batches = TrainBatches(samples, FileReader(tmp_path), CLIP, DASSL_SCALE, batch_size=2, seed=5)
    first = list(batches.first(2))
    for workers in (0, 1):
        batches.sampler.set_epoch(0)
        loaded = list(batches.loader(workers))
        assert len(loaded) == 2
        for (a, ya), (b, yb) in zip(loaded, first, strict=True):
            assert torch.equal(a, b) and torch.equal(ya, yb)


def test_images_at_the_crop_size_give_the_same_batches_from_either_pipeline():
    # the shapes world's images are 32 px, the model's size: the cache holds the images themselves
    dataset = load_dataset("shapes")
    items, _ = few_shot_split(dataset.train, dataset.val, 2, seed=1)
    spec = PreprocessSpec(size=32, mean=CLIP.mean, std=CLIP.std, interpolation="bicubic")
    made = {
        cache: list(TrainBatches(items, dataset.reader, spec, (0.5, 1.0), 16, seed=1, cache=cache).first(6))
        for cache in TRAIN_CACHES
    }
    for (a, ya), (b, yb) in zip(made["none"], made["crop-size"], strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb)


def _view_scales(monkeypatch, cache: str, path: Path, views: int) -> list[float]:
    """Source pixels per output pixel (the geometric mean of the crop's sides over the output size) of the
    first ``views`` training views of one image."""
    sides: list[float] = []
    draw = transforms._crop_params

    def recorded(height, width, scale, g):
        i, j, h, w = draw(height, width, scale, g)
        sides.append(math.sqrt(h * w))
        return i, j, h, w

    monkeypatch.setattr(transforms, "_crop_params", recorded)
    samples = [Sample(path.name, 0, "photo")] * 8
    batches = TrainBatches(samples, FileReader(path.parent), CLIP, DASSL_SCALE, 8, seed=1, cache=cache)
    for _ in batches.first(views // 8):
        pass
    monkeypatch.undo()
    return [side / CLIP.size for side in sides]


def test_views_of_a_500x375_image_are_upsampled_2x_only_as_often_as_dassl_allows(tmp_path, monkeypatch):
    path = _photo(tmp_path / "photo.jpg")
    # Dassl's geometry on the original size, drawn by torchvision from the same seeds
    dassl = []
    for _, view_seed in _plan(8, 8, 1, 50):
        torch.manual_seed(view_seed)
        _, _, h, w = T.RandomResizedCrop.get_params(torch.empty(3, 375, 500), DASSL_SCALE, (3 / 4, 4 / 3))
        dassl.append(math.sqrt(h * w) / CLIP.size)
    default = _view_scales(monkeypatch, "none", path, 400)
    cached = _view_scales(monkeypatch, "crop-size", path, 400)

    def upsampled(scales):  # share of views whose output pixels come from at most half a source pixel each
        return sum(s <= 0.5 for s in scales) / len(scales)

    def detail(scales):  # mean real detail of a view, in source pixels across the output's 224
        return sum(min(s, 1.0) for s in scales) / len(scales) * CLIP.size

    assert default == dassl  # the crop boxes are Dassl's, drawn on the original size
    assert upsampled(default) == upsampled(dassl) == 0.0  # scale >= 0.08 of 500x375 is never < 112 px a side
    assert 0.10 < upsampled(cached) < 0.22  # the crop-size cache: about 16% (0.07 of the area is 2x at 224x298)
    assert detail(default) > 205 and detail(cached) < 170  # about 211 against 163 px
