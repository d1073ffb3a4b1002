"""Batches for training (augmented per (seed, epoch, position)) and for evaluation (streamed).

Training views are cropped from the images at their full resolution, as Dassl crops them: every
view reads and decodes its image again, in DataLoader workers, and nothing is held in memory
(decoding a 500x375 JPEG costs about as much as cutting and resizing the view itself; the
measurements that chose this design, and how many views a worker makes per second, are in
benchmarks/README.md, "Training crops"). ``--train-cache crop-size`` (``TRAIN_CACHES``) instead
decodes every image once with its short side resized to the crop size and crops that copy: no
decoding per view, but small crops are then upsampled from fewer pixels than the image has, so its
views (and results) differ from the paper's. Evaluation sets are large and read once, so they
stream through DataLoader workers too.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

from clipfit.config import TRAIN_CACHES
from clipfit.data.base import ImageReader, Sample
from clipfit.data.transforms import decode_for_cache, image_tensor, test_transform, train_augment
from clipfit.errors import ConfigError
from clipfit.models import PreprocessSpec

logger = logging.getLogger(__name__)

_MASK = (1 << 64) - 1

# Where training views are cropped from (TRAIN_CACHES, in clipfit.config so --help needs no torch): "none"
# decodes each view's image and crops it at full resolution (Dassl's way, the default); "crop-size" crops a
# copy decoded once with its short side at the crop size.


def mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from integers (splitmix64 steps), stable across platforms."""
    h = 0x9E3779B97F4A7C15
    for part in parts:
        h = ((h ^ (part & _MASK)) * 0xBF58476D1CE4E5B9) & _MASK
        h ^= h >> 31
        h = (h * 0x94D049BB133111EB) & _MASK
        h ^= h >> 29
    return h & 0x7FFF_FFFF_FFFF_FFFF


LOADER_WORKERS_ENV = "CLIPFIT_LOADER_WORKERS"  # a sweep's pool worker sets it to half its share of the cores


def default_workers() -> int:
    """$CLIPFIT_LOADER_WORKERS when set (a sweep's worker process: half its share of the cores), else half the
    visible cores, at most 8 (the other half computes)."""
    value = os.environ.get(LOADER_WORKERS_ENV, "").strip()
    if value.isdigit():
        return int(value)
    return max(0, min(8, (os.cpu_count() or 2) // 2))


def workers_for(requested: int | None, dataset) -> int:
    """DataLoader workers: as requested, else none for generated (in-memory) data, else half the cores."""
    if requested is not None:
        return requested
    return 0 if dataset.split_source == "generated" else default_workers()


class _Decode(TorchDataset):
    def __init__(self, samples: Sequence[Sample], reader: ImageReader, spec: PreprocessSpec) -> None:
        self.samples, self.reader, self.spec = samples, reader, spec

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> torch.Tensor:
        return decode_for_cache(self.reader(self.samples[index].path), self.spec)


def _as_is(item):
    """A collate function that keeps one decoded image as it is (module level: picklable under spawn)."""
    return item


def decode_images(
    samples: Sequence[Sample], reader: ImageReader, spec: PreprocessSpec, num_workers: int = 0
) -> list[torch.Tensor]:
    """Decode every image once (short side resized to the crop size), in sample order (the crop-size cache)."""
    loader = DataLoader(_Decode(samples, reader, spec), batch_size=None, num_workers=num_workers, collate_fn=_as_is)
    return list(tqdm(loader, desc="decode train images", total=len(samples), disable=None, leave=False))


class ImageViews(TorchDataset):
    """``dataset[(index, seed)]``: one augmented view of a sample, cropped from the image as the reader returns it.

    The image is read and decoded for every view (in the DataLoader's workers), so the crop box is
    drawn on the original size and cut from the original pixels, as Dassl does.
    """

    def __init__(
        self, samples: Sequence[Sample], reader: ImageReader, spec: PreprocessSpec, scale: tuple[float, float]
    ) -> None:
        self.samples, self.reader, self.spec, self.scale = list(samples), reader, spec, scale

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        sample = self.samples[index]
        image = image_tensor(self.reader(sample.path))
        g = torch.Generator().manual_seed(seed)
        return train_augment(image, self.spec, self.scale, g), sample.label


class AugmentedImages(TorchDataset):
    """Cached uint8 images; ``dataset[(index, seed)]`` is one augmented view drawn with that seed."""

    def __init__(
        self, images: Sequence[torch.Tensor], labels: Sequence[int], spec: PreprocessSpec, scale: tuple[float, float]
    ) -> None:
        self.images, self.labels, self.spec, self.scale = list(images), list(labels), spec, scale

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        g = torch.Generator().manual_seed(seed)
        return train_augment(self.images[index], self.spec, self.scale, g), self.labels[index]


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """Shuffled batches of (index, augmentation seed) for one epoch, sharded over processes.

    The permutation and the per-sample seeds depend only on (seed, epoch, position in the epoch),
    so process ``rank`` of ``world_size`` takes a contiguous slice of every global batch and the
    union over ranks is exactly the single-process batch. The last incomplete batch is dropped
    when the set has at least one full batch (Dassl's rule).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise ConfigError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        if n < world_size:
            raise ConfigError(
                f"{n} training images cannot be spread over {world_size} processes (each needs at least one); "
                "run with fewer processes"
            )
        self.n, self.batch_size, self.seed, self.rank, self.world_size = n, batch_size, seed, rank, world_size
        self.drop_last = n >= batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    @property
    def global_batch_size(self) -> int:
        """Images per step over all processes: the batch size, or the whole set when it is smaller
        (then there is exactly one, incomplete, batch)."""
        return self.batch_size if self.drop_last else self.n

    def global_batches(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        order = torch.randperm(self.n, generator=g).tolist()
        for b in range(len(self)):
            start = b * self.batch_size
            yield [
                (index, mix_seed(self.seed, self.epoch, start + k))
                for k, index in enumerate(order[start : start + self.batch_size])
            ]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.global_batches():
            # contiguous, balanced slices: equal for full batches (the batch size divides by the
            # world size), off by at most one for the single incomplete batch of a small set
            base, extra = divmod(len(batch), self.world_size)
            start = self.rank * base + min(self.rank, extra)
            yield batch[start : start + base + (self.rank < extra)]


class TrainBatches:
    """The training batches of a run, the one pipeline the trainer and the analyses share.

    Each epoch's batches are drawn by :class:`EpochBatches` and every view is augmented with its own
    seed, so batch ``b`` of epoch ``e`` is the same wherever and whenever it is made. ``cache`` says
    where views are cropped from (``TRAIN_CACHES``): ``"none"`` reads and decodes the image for every
    view and crops it at full resolution (:class:`ImageViews`); ``"crop-size"`` decodes every image
    once at the crop size (:func:`decode_images`) and crops that copy (:class:`AugmentedImages`).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        reader: ImageReader,
        spec: PreprocessSpec,
        crop_scale: tuple[float, float],
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        cache: str = "none",
    ) -> None:
        if cache not in TRAIN_CACHES:
            raise ConfigError(f"unknown training-image cache '{cache}'; expected one of {', '.join(TRAIN_CACHES)}")
        self.samples, self.reader, self.spec, self.crop_scale = list(samples), reader, spec, crop_scale
        self.cache = cache
        self.sampler = EpochBatches(len(self.samples), batch_size, seed, rank=rank, world_size=world_size)

    def views(self, indices: Sequence[int] | None = None, num_workers: int = 0) -> TorchDataset:
        """The views of the samples at ``indices`` (default all; a key's index is a position in ``indices``).

        With the crop-size cache this decodes those images now (in ``num_workers`` workers).
        """
        samples = self.samples if indices is None else [self.samples[i] for i in indices]
        if self.cache == "none":
            return ImageViews(samples, self.reader, self.spec, self.crop_scale)
        images = decode_images(samples, self.reader, self.spec, num_workers)
        return AugmentedImages(images, [s.label for s in samples], self.spec, self.crop_scale)

    def loader(self, num_workers: int = 0) -> DataLoader:
        """A DataLoader over this process's part of each epoch's batches (``sampler.set_epoch`` picks the epoch)."""
        logger.debug(
            "training views: %s, %d DataLoader workers",
            "cropped from the original images, decoded per view"
            if self.cache == "none"
            else f"cropped from images cached at {self.spec.size} px (short side)",
            num_workers,
        )
        return DataLoader(self.views(num_workers=num_workers), batch_sampler=self.sampler, num_workers=num_workers)

    def first(self, count: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The run's first ``count`` global batches, exactly as training draws them; reads only their images."""
        plan: list[list[tuple[int, int]]] = []
        sampler = EpochBatches(len(self.samples), self.sampler.batch_size, self.sampler.seed)
        epoch = 0
        while len(plan) < count and self.samples:
            sampler.set_epoch(epoch)
            plan.extend(sampler.global_batches())
            epoch += 1
        plan = plan[:count]
        needed = sorted({index for batch in plan for index, _ in batch})
        position = {index: k for k, index in enumerate(needed)}
        dataset = self.views(needed)
        for batch in plan:
            items = [dataset[(position[index], view_seed)] for index, view_seed in batch]
            yield torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


class EvalImages(TorchDataset):
    """Test-transformed images of a sample list (streamed from the reader)."""

    def __init__(self, samples: Sequence[Sample], reader: ImageReader, spec: PreprocessSpec) -> None:
        self.samples, self.reader, self.transform = list(samples), reader, test_transform(spec)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        return self.transform(self.reader(sample.path)), sample.label


def eval_loader(
    samples: Sequence[Sample],
    reader: ImageReader,
    spec: PreprocessSpec,
    batch_size: int = 256,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A loader over this process's shard (every ``world_size``-th sample from ``rank``)."""
    shard = list(samples)[rank::world_size]
    return DataLoader(
        EvalImages(shard, reader, spec),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=False,
    )
