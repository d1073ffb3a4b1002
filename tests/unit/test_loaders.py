"""Training batches are a function of (seed, epoch, position): shardable and resumable."""

from __future__ import annotations

import pytest
import torch

from clipfit.data.loaders import AugmentedImages, EpochBatches, mix_seed
from clipfit.data.transforms import train_augment
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
