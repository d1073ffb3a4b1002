"""The preprocessed test-set cache: a test split decoded once per model input, then read as uint8 pixels.

The test transform is deterministic (resize the short side, centre-crop: :func:`clipfit.data.transforms.test_pixels`),
so its output for one dataset's test split and one model preprocessing never changes. The first evaluation decodes
the images (in DataLoader workers, with the same PIL transform as ever) and, while it evaluates, writes the uint8
pixels of the whole test split into an entry of the cache; every later evaluation of that split with a compatible
model (every seed, recipe and zero-shot pass, clipfit-eval targets, the analyses that embed test images) reads them
memory-mapped and normalises them on the model's device (:func:`clipfit.data.transforms.normalise`). Both paths give
the same uint8 pixels and the same normalisation table, so accuracies are identical to every digit either way.

An entry is a folder ``<cache>/testsets/<dataset>-<size>px-<decoder>-<key>/`` holding the pixels, a CRC-32 per
row and a manifest; its layout, how it is written and renamed into place, and the builders' lock are
:mod:`clipfit.data.cache_entries`.

The key hashes everything that determines the pixels: the image folder, every test path in order with its file
size and modification time, the input size, interpolation, resize rule (short side, antialiased) and crop (centre),
the decoder, and the versions of Pillow, its JPEG library and torchvision. A changed split, image, preprocessing or
library is another key; entries nobody uses any more age out under the size cap.

A folder that fails any check (no or unreadable manifest, another key, wrong file sizes, a CRC table that does
not match its hash) is removed and rebuilt, never read; a row whose CRC does not match is decoded from its image
instead and the entry removed after that evaluation. One process builds an entry at a time; another evaluating the
same test set meanwhile decodes its images as if there were no cache.

Disk: ``CLIPFIT_EVAL_CACHE`` (or ``--eval-cache``) is ``on`` (the default, at most 64 GB), ``off``, or a cap such as
``20GB``. Before a build the least recently used entries are removed to stay under the cap; a test set larger than
the cap, or one that would leave less than 2 GB free on the disk, is evaluated from its images without caching.

Decoders (``CLIPFIT_EVAL_DECODER`` or ``--eval-decoder``): ``pil``, the default, is the test transform itself;
``nvjpeg`` decodes JPEGs on the GPU (:mod:`clipfit.data.decoding`). Its pixels are not PIL's, so its entries have
their own key and a run records the decoder in its settings.

Not cached: generated data (the shapes world: its images are arrays in memory) and samples outside a dataset's test
split. Under torchrun every process reads its shard from an existing entry but none builds one: the first
single-process evaluation of the test set does.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipfit.data.base import Dataset, FileReader, ImageReader, Sample
from clipfit.data.cache_entries import (
    CRCS,
    FORMAT,
    MANIFEST,
    PIXELS,
    _Builder,
    _Entry,
    _Lock,
    _remove_folder,
    _remove_stale,
    cache_entries,
    entries_root,
)
from clipfit.data.decoding import GpuJpegDecoder, _decoded_batches
from clipfit.data.transforms import normalise, normalise_table, test_pixels
from clipfit.errors import ConfigError
from clipfit.models import PreprocessSpec

logger = logging.getLogger(__name__)

CACHE_ENV = "CLIPFIT_EVAL_CACHE"
DECODER_ENV = "CLIPFIT_EVAL_DECODER"
DECODERS = ("pil", "nvjpeg")
DEFAULT_MAX_BYTES = 64 * 10**9
MIN_FREE_BYTES = 2 * 10**9  # a build never leaves less than this free on the cache's disk
_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9, "T": 10**12}
_UNITS |= {"TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """Bytes of ``20GB``, ``500MB``, ``1.5TB``, ``64GiB`` or a plain number of bytes."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if not match or unit not in _UNITS:
        raise ConfigError(f"cannot read the size {text!r}; write it like 20GB, 500MB or 1.5TB")
    return int(float(match.group(1)) * _UNITS[unit])


def _format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class CachePolicy:
    """Whether evaluations cache test sets, how much disk they may take, and which decoder makes the pixels."""

    enabled: bool = True  # read and build entries; False: decode every evaluation's images (nothing written)
    max_bytes: int = DEFAULT_MAX_BYTES  # cap on all entries together; least recently used ones go first
    decoder: str = "pil"  # pil (the test transform itself) or nvjpeg (GPU JPEG decoding; other pixels)

    @classmethod
    def parse(cls, value: str | None = None, decoder: str | None = None) -> CachePolicy:
        """From ``on``, ``off`` or a cap (``20GB``) and a decoder name; None reads $CLIPFIT_EVAL_CACHE and
        $CLIPFIT_EVAL_DECODER (unset: on, 64 GB, pil)."""
        value = value if value is not None else os.environ.get(CACHE_ENV) or "on"
        decoder = decoder or os.environ.get(DECODER_ENV) or "pil"
        if decoder not in DECODERS:
            raise ConfigError(f"unknown evaluation decoder {decoder!r}; expected one of {', '.join(DECODERS)}")
        word = value.strip().lower()
        if word in ("on", "yes", "1", "true"):
            return cls(True, DEFAULT_MAX_BYTES, decoder)
        if word in ("off", "no", "0", "false"):
            return cls(False, 0, decoder)
        try:
            cap = parse_size(value)
        except ConfigError:
            raise ConfigError(
                f"--eval-cache / ${CACHE_ENV} is {value!r}; expected on, off or a size cap such as 20GB"
            ) from None
        return cls(cap > 0, cap, decoder)

    @property
    def root(self) -> Path:
        """Where entries live (read when used: tests and users move $CLIPFIT_CACHE)."""
        return entries_root()


# ---------------------------------------------------------------------------------------------- test images


class _Batches:
    """An iterable of (normalised float images on the device, labels) with a length (for progress bars)."""

    def __init__(self, count: int, make: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]) -> None:
        self.count, self.make = count, make

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.make()


class TestImages:
    """The test images of one dataset at one model's input, as evaluation batches: from the cache when an entry
    holds them, else decoded (and kept in a new entry, when the policy allows and the caller asks).

    ``stats`` counts what happened: ``decoded`` (images through PIL), ``gpu`` and ``fallback`` (the GPU decoder),
    ``cached`` (rows read from an entry), ``built`` (entries written), ``corrupt`` (rows whose CRC failed).
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        spec: PreprocessSpec,
        reader: ImageReader,
        test: Sequence[Sample] = (),
        name: str = "",
        policy: CachePolicy | None = None,
    ) -> None:
        self.spec, self.reader, self.test, self.name = spec, reader, list(test), name
        self.policy = policy or CachePolicy.parse()
        self.stats: Counter[str] = Counter()
        self._key: dict[str, Any] | bool | None = False  # False: not computed yet
        self._rows: dict[str, int] | None = None
        self._tables: dict[torch.device, torch.Tensor] = {}

    @classmethod
    def of(cls, dataset: Dataset, spec: PreprocessSpec, policy: CachePolicy | None = None) -> TestImages:
        """The test split of ``dataset`` at the input ``spec`` describes."""
        return cls(spec, dataset.reader, dataset.test, dataset.name, policy)

    # ------------------------------------------------------------------ identity

    def key(self) -> dict[str, Any] | None:
        """What determines the cached pixels, or None when this test set is not cacheable (policy off, generated
        data, a reader without files, an image missing)."""
        if self._key is False:
            self._key = self._make_key()
        return self._key  # type: ignore[return-value]

    def _make_key(self) -> dict[str, Any] | None:
        if not self.policy.enabled or not self.test or not isinstance(self.reader, FileReader):
            return None
        import PIL
        import torchvision
        from PIL import features

        root = self.reader.root.expanduser().resolve()
        files = hashlib.sha256()
        for sample in self.test:
            try:
                st = os.stat(root / sample.path)
            except OSError:
                return None  # evaluation's reader names the missing file
            files.update(f"{sample.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        versions = {"pillow": PIL.__version__, "jpeg": features.version("jpg"), "torchvision": torchvision.__version__}
        if self.policy.decoder == "nvjpeg":
            versions |= {"torch": torch.__version__, "cuda": torch.version.cuda}
        return {
            "format": FORMAT,
            "dataset": self.name,
            "root": str(root),
            "images": len(self.test),
            "files": files.hexdigest(),
            "size": self.spec.size,
            "interpolation": self.spec.interpolation,
            "resize": "short side, antialiased",
            "crop": "center",
            "decoder": self.policy.decoder,
            "versions": versions,
        }

    @property
    def folder(self) -> Path | None:
        """The entry's folder (whether or not it exists yet); None when not cacheable."""
        key = self.key()
        if key is None:
            return None
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name).strip("._")[:40] or "test"
        return self.policy.root / f"{slug}-{self.spec.size}px-{self.policy.decoder}-{digest}"

    def rows(self, samples: Sequence[Sample]) -> list[int] | None:
        """Each sample's row in an entry (its first occurrence in the test split), or None if one is not there."""
        if self._rows is None:
            self._rows = {}
            for i, sample in enumerate(self.test):
                self._rows.setdefault(sample.path, i)
        rows = [self._rows.get(s.path) for s in samples]
        return None if any(r is None for r in rows) else rows  # type: ignore[return-value]

    # ------------------------------------------------------------------ entries

    def open(self) -> _Entry | None:
        """The valid entry of this test set, or None; an invalid one is removed (and so rebuilt)."""
        folder = self.folder
        if folder is None or not folder.is_dir():
            return None
        key, size, count = self.key(), self.spec.size, len(self.test)
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            problem, crc_bytes = None, b""
            if manifest.get("format") != FORMAT or manifest.get("key") != key:
                problem = "it was made for another test set or preprocessing"
            elif manifest.get("count") != count or manifest.get("size") != size:
                problem = "its shape does not match"
            elif (folder / PIXELS).stat().st_size != count * 3 * size * size:
                problem = f"{PIXELS} has {(folder / PIXELS).stat().st_size} bytes, not {count * 3 * size * size}"
            else:
                crc_bytes = (folder / CRCS).read_bytes()
                if len(crc_bytes) != 4 * count or hashlib.sha256(crc_bytes).hexdigest() != manifest.get("crc_sha256"):
                    problem = f"{CRCS} does not match the manifest"
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            problem = f"its manifest cannot be read ({type(exc).__name__}: {exc})"
        if problem is None:
            try:
                entry = _Entry(folder, count, size, crc_bytes)
            except (OSError, ValueError) as exc:
                problem = f"it cannot be mapped ({exc})"
        if problem is not None:
            logger.warning("evaluation cache: removing %s (%s); it will be rebuilt", folder, problem)
            _remove_folder(folder)
            return None
        with contextlib.suppress(OSError):  # "last used", for the size cap (a read-only cache stays as it is)
            os.utime(folder / MANIFEST)
        return entry

    def _builder(self) -> _Builder | None:
        """A builder for this test set's entry, or None (another process builds it, no room, or no write access)."""
        folder, key = self.folder, self.key()
        assert folder is not None and key is not None
        count, size = len(self.test), self.spec.size
        needed = count * 3 * size * size + 4 * count
        if needed > self.policy.max_bytes:
            logger.info(
                "evaluation cache: %s at %d px takes %s, more than the cap of %s (--eval-cache / $%s): not cached",
                self.name, size, _format_bytes(needed), _format_bytes(self.policy.max_bytes), CACHE_ENV,
            )  # fmt: skip
            return None
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            lock = _Lock(folder.with_name(folder.name + ".lock"))
            if not lock.acquire():
                logger.info("evaluation cache: another process is caching %s; decoding its images meanwhile", self.name)
                return None
            try:
                _remove_stale(folder)
                self._make_room(needed, folder)
                free = shutil.disk_usage(folder.parent).free
                if free - needed < MIN_FREE_BYTES:
                    logger.warning(
                        "evaluation cache: %s needs %s and %s are free at %s: not cached (free space, or "
                        "--eval-cache off)",
                        self.name, _format_bytes(needed), _format_bytes(free), folder.parent,
                    )  # fmt: skip
                    lock.release()
                    return None
                return _Builder(folder, count, size, key, lock)
            except BaseException:
                lock.release()
                raise
        except OSError as exc:
            logger.warning("evaluation cache: cannot write to %s (%s): not cached", folder.parent, exc)
            return None

    def _make_room(self, needed: int, keep: Path) -> None:
        entries = [e for e in cache_entries(keep.parent) if e[0] != keep]
        total = sum(size for _, size, _ in entries)
        for folder, size, _ in entries:  # least recently used first
            if total + needed <= self.policy.max_bytes:
                break
            logger.info("evaluation cache: removing %s (least recently used) to stay under the cap", folder.name)
            _remove_folder(folder)
            total -= size

    # ------------------------------------------------------------------ batches

    def table(self, device: torch.device) -> torch.Tensor:
        if device not in self._tables:
            self._tables[device] = normalise_table(self.spec).to(device)
        return self._tables[device]

    def _gpu(self, device: torch.device) -> GpuJpegDecoder | None:
        if self.policy.decoder != "nvjpeg":
            return None
        if device.type != "cuda":
            logger.warning("the nvjpeg decoder needs a CUDA device; decoding with PIL on %s", device)
            return None
        return GpuJpegDecoder(self.spec, device, stats=self.stats)

    def batches(
        self,
        samples: Sequence[Sample],
        batch_size: int,
        device: torch.device | str,
        *,
        num_workers: int = 0,
        build: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> _Batches:
        """(normalised float32 images on ``device``, labels) of ``samples`` (process ``rank``'s shard: every
        ``world_size``-th sample), in consecutive batches of ``batch_size``, exactly as the JPEG path batches them.

        ``build``: when no entry holds the test set, write one while evaluating (single process only); callers
        evaluating a small part of it (a capped evaluation, an analysis) pass False.
        """
        device = torch.device(device)
        shard = list(samples)[rank::world_size]
        count = (len(shard) + batch_size - 1) // batch_size
        return _Batches(count, lambda: self._iterate(shard, batch_size, device, num_workers, build, world_size))

    def _iterate(self, shard, batch_size, device, num_workers, build, world_size):
        labels = torch.tensor([s.label for s in shard], dtype=torch.long)
        rows = self.rows(shard) if self.key() is not None else None
        if rows is not None:
            entry = self.open()
            if entry is not None:
                yield from self._read(entry, shard, rows, labels, batch_size, device)
                return
            if build and world_size == 1:
                builder = self._builder()
                if builder is not None:
                    if all(a < b for a, b in itertools.pairwise(rows)):
                        yield from self._build_and_evaluate(builder, rows, labels, batch_size, device, num_workers)
                        return
                    # rows out of order: build first, then read (the model sees batches in the samples' order)
                    for _ in self._decode_all(builder, batch_size, num_workers, device):
                        pass
                    entry = self.open()
                    if entry is not None:
                        yield from self._read(entry, shard, rows, labels, batch_size, device)
                        return
        for positions, pixels in _decoded_batches(
            shard, self.reader, self.spec, batch_size, num_workers, self._gpu(device), self.stats
        ):
            yield self._to_device(pixels, device), labels[positions[0] : positions[-1] + 1]

    def _to_device(self, pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
        if device.type == "cuda":
            pixels = pixels.pin_memory()
        return normalise(pixels.to(device, non_blocking=True), self.table(device))

    def _read(self, entry: _Entry, shard, rows, labels, batch_size, device):
        corrupt = 0
        try:
            for start in range(0, len(rows), batch_size):
                pixels, bad = entry.read(rows[start : start + batch_size])
                self.stats["cached"] += len(pixels) - len(bad)
                if bad:  # never used: decoded from the image instead
                    corrupt += len(bad)
                    transform = test_pixels(self.spec)
                    for k in bad:
                        pixels[k] = transform(self.reader(shard[start + k].path))
                    self.stats["decoded"] += len(bad)
                yield self._to_device(pixels, device), labels[start : start + batch_size]
        finally:
            if corrupt:
                self.stats["corrupt"] += corrupt
                logger.warning(
                    "evaluation cache: %d rows of %s failed their checksum (decoded from the images instead); "
                    "removing the entry, it will be rebuilt",
                    corrupt, entry.folder,
                )  # fmt: skip
                _remove_folder(entry.folder)

    def _decode_all(self, builder: _Builder, batch_size: int, num_workers: int, device: torch.device):
        """(positions, pixels) of the whole test split, decoded and written into ``builder`` as they come; the entry
        is kept (renamed into place) after the last batch, discarded when the caller stops early or decoding fails."""
        kept = False
        try:
            for positions, pixels in _decoded_batches(
                self.test, self.reader, self.spec, batch_size, num_workers, self._gpu(device), self.stats
            ):
                builder.write(positions, pixels)
                yield positions, pixels
            kept = builder.finish()
        finally:
            builder.close()
        if kept:
            self.stats["built"] += 1
            logger.info(
                "evaluation cache: kept the %d test images of %s in %s", len(self.test), self.name, builder.folder
            )
        elif builder.failed:
            logger.warning("evaluation cache: could not cache %s (%s)", self.name, builder.failed)

    def _build_and_evaluate(self, builder: _Builder, rows, labels, batch_size, device, num_workers):
        """Decode the whole test split into the entry and yield the batches of the wanted ``rows`` (ascending) as
        their images arrive: the first evaluation costs what it cost without a cache."""
        wanted, last = set(rows), rows[-1]
        buffer: list[torch.Tensor] = []
        buffered = done = 0
        for positions, pixels in self._decode_all(builder, batch_size, num_workers, device):
            picked = [k for k, row in enumerate(positions) if row in wanted]
            if picked:
                buffer.append(pixels[picked])
                buffered += len(picked)
            while buffered >= batch_size or (buffered and positions[-1] >= last):
                block = torch.cat(buffer)
                batch, rest = block[:batch_size], block[batch_size:]
                buffer, buffered = ([rest] if len(rest) else []), len(rest)
                yield self._to_device(batch, device), labels[done : done + len(batch)]
                done += len(batch)
