"""The preprocessed test-set cache: a test split decoded once per model input, then read as uint8 pixels.

The test transform is deterministic (resize the short side, centre-crop: :func:`clipfit.data.transforms.test_pixels`),
so its output for one dataset's test split and one model preprocessing never changes. The first evaluation decodes
the images (in DataLoader workers, with the same PIL transform as ever) and, while it evaluates, writes the uint8
pixels of the whole test split into an entry of the cache; every later evaluation of that split with a compatible
model (every seed, recipe and zero-shot pass, clipfit-eval targets, the analyses that embed test images) reads them
memory-mapped and normalises them on the model's device (:func:`clipfit.data.transforms.normalise`). Both paths give
the same uint8 pixels and the same normalisation table, so accuracies are identical to every digit either way.

An entry is a folder ``<cache>/testsets/<dataset>-<size>px-<decoder>-<key>/`` (``<cache>``:
:func:`clipfit.data.splits.cache_dir`) holding

- ``pixels.u8``: N x 3 x S x S uint8, row i the i-th image of the test split;
- ``crc32.u32``: the CRC-32 of every row (little-endian uint32), checked before the row is used;
- ``manifest.json``: what the key was made of, N, S, the two files' sizes and the SHA-256 of ``crc32.u32``.

The key hashes everything that determines the pixels: the image folder, every test path in order with its file
size and modification time, the input size, interpolation, resize rule (short side, antialiased) and crop (centre),
the decoder, and the versions of Pillow, its JPEG library and torchvision. A changed split, image, preprocessing or
library is another key; entries nobody uses any more age out under the size cap.

An entry is written into a temporary folder beside it and renamed into place once its files are flushed and its
manifest (written last) is there. A folder that fails any check (no or unreadable manifest, another key, wrong file
sizes, a CRC table that does not match its hash) is removed and rebuilt, never read; a row whose CRC does not match
is decoded from its image instead and the entry removed after that evaluation. One process builds an entry at a
time (``<entry>.lock``, an advisory lock); another evaluating the same test set meanwhile decodes its images as if
there were no cache. Builders that cannot see each other's lock (some network filesystems) both write temporary
folders: the first rename wins and the other discards its copy.

Disk: ``CLIPFIT_EVAL_CACHE`` (or ``--eval-cache``) is ``on`` (the default, at most 64 GB), ``off``, or a cap such as
``20GB``. Before a build the least recently used entries are removed to stay under the cap; a test set larger than
the cap, or one that would leave less than 2 GB free on the disk, is evaluated from its images without caching.

Decoders (``CLIPFIT_EVAL_DECODER`` or ``--eval-decoder``): ``pil``, the default, is the test transform itself.
``nvjpeg`` decodes 8-bit three-component JPEGs on the GPU in batches (``torchvision.io.decode_jpeg``) and resizes
them there; PNGs, grayscale, CMYK and anything the GPU decoder refuses go through PIL. Its pixels are not PIL's
(another IDCT and chroma upsampling, torchvision's resize): accuracies can differ from ``pil`` by a few images, so its
entries have their own key and a run records the decoder in its settings.

Not cached: generated data (the shapes world: its images are arrays in memory) and samples outside a dataset's test
split. Under torchrun every process reads its shard from an existing entry but none builds one: the first
single-process evaluation of the test set does.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import itertools
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from clipfit.data.base import Dataset, FileReader, ImageReader, Sample
from clipfit.data.splits import cache_dir
from clipfit.data.transforms import normalise, normalise_table, test_pixels
from clipfit.errors import ConfigError
from clipfit.files import atomic_write_bytes, atomic_write_text, disk_full_message, is_disk_full
from clipfit.models import PreprocessSpec

logger = logging.getLogger(__name__)

FORMAT = 1  # layout of an entry; another value is another key
CACHE_ENV = "CLIPFIT_EVAL_CACHE"
DECODER_ENV = "CLIPFIT_EVAL_DECODER"
DECODERS = ("pil", "nvjpeg")
DEFAULT_MAX_BYTES = 64 * 10**9
MIN_FREE_BYTES = 2 * 10**9  # a build never leaves less than this free on the cache's disk
PIXELS, CRCS, MANIFEST = "pixels.u8", "crc32.u32", "manifest.json"
STALE_S = 3600.0  # a temporary entry folder untouched this long was left by a killed builder
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
        return cache_dir() / "testsets"


# ---------------------------------------------------------------------------------------------- decoding


def jpeg_kind(data: bytes) -> str:
    """What a file's header says about decoding it on a GPU: ``"ycbcr"`` for an 8-bit, three-component,
    Huffman-coded JPEG (baseline, extended or progressive) that is not Adobe-RGB coded; otherwise why not
    (``"not jpeg"``, ``"grayscale"``, ``"cmyk"``, ``"rgb"``, ``"12-bit"``, ``"lossless or arithmetic"``,
    ``"truncated"``)."""
    if data[:2] != b"\xff\xd8":
        return "not jpeg"
    pos, adobe_rgb = 2, False
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return "truncated"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xEE and segment[:5] == b"Adobe" and len(segment) >= 12:
            adobe_rgb = segment[11] == 0  # transform 0: the three components are R, G, B, not YCbCr
        if marker in (0xC0, 0xC1, 0xC2):
            if len(segment) < 6:
                return "truncated"
            precision, components = segment[0], segment[5]
            if precision != 8:
                return f"{precision}-bit"
            if components == 1:
                return "grayscale"
            if components == 4:
                return "cmyk"
            if components != 3:
                return f"{components} components"
            return "rgb" if adobe_rgb else "ycbcr"
        if 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return "lossless or arithmetic"
        if marker == 0xDA:  # start of scan before any frame header
            return "truncated"
        pos += 2 + length
    return "truncated"


class _Decode(TorchDataset):
    """(position, kind, tensor) per sample: the test transform's uint8 pixels (kind "pixels"), or, for the GPU
    decoder, the raw bytes of a JPEG it can read (kind "jpeg")."""

    def __init__(self, samples: Sequence[Sample], reader: ImageReader, spec: PreprocessSpec, jpeg_root: Path | None):
        self.samples, self.reader, self.transform, self.jpeg_root = list(samples), reader, test_pixels(spec), jpeg_root

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[int, str, torch.Tensor]:
        path = self.samples[index].path
        if self.jpeg_root is not None:
            try:
                data = (self.jpeg_root / path).read_bytes()
            except OSError:
                data = b""  # the reader names the problem below
            if jpeg_kind(data) == "ycbcr":
                return index, "jpeg", torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return index, "pixels", self.transform(self.reader(path))


def _collate(items: list[tuple[int, str, torch.Tensor]]) -> tuple[list[int], list[int], Any, list[int], Any]:
    """Stack decoded pixels and concatenate JPEG bytes in the worker: two tensors cross to the main process,
    not one per image."""
    positions = [p for p, _, _ in items]
    done = [k for k, (_, kind, _) in enumerate(items) if kind == "pixels"]
    jpegs = [k for k, (_, kind, _) in enumerate(items) if kind == "jpeg"]
    pixels = torch.stack([items[k][2] for k in done]) if done else None
    blob = (torch.cat([items[k][2] for k in jpegs]), [len(items[k][2]) for k in jpegs]) if jpegs else None
    return positions, done, pixels, jpegs, blob


def pil_pixels(data: bytes, spec: PreprocessSpec) -> torch.Tensor:
    """The test transform's pixels of an encoded image (how the GPU decoder's fallback reads it)."""
    with Image.open(io.BytesIO(data)) as image:
        return test_pixels(spec)(image.convert("RGB"))


class GpuJpegDecoder:
    """Decodes batches of JPEG bytes on ``device`` and resizes and crops them there; any image it cannot decode
    (the whole batch failing, then that image alone) is decoded by PIL. ``decode`` is
    ``torchvision.io.decode_jpeg`` (a list of byte tensors, ``device=``, ``mode=``); tests pass a fake."""

    def __init__(
        self,
        spec: PreprocessSpec,
        device: torch.device | str,
        decode: Callable | None = None,
        stats: Counter[str] | None = None,
    ) -> None:
        self.spec, self.device = spec, torch.device(device)
        if decode is None:
            from torchvision.io import decode_jpeg

            decode = decode_jpeg
        self.decode = decode
        self.stats: Counter[str] = stats if stats is not None else Counter()

    def _finish(self, image: torch.Tensor) -> torch.Tensor:
        import torchvision.transforms.functional as TF

        from clipfit.data.transforms import interpolation

        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"decoded to shape {tuple(image.shape)}")
        image = TF.resize(image, self.spec.size, interpolation=interpolation(self.spec), antialias=True)
        return TF.center_crop(image, self.spec.size).cpu()

    def _one(self, data: torch.Tensor) -> torch.Tensor:
        from torchvision.io import ImageReadMode

        try:
            out = self._finish(self.decode([data], device=self.device, mode=ImageReadMode.RGB)[0])
            self.stats["gpu"] += 1
            return out
        except Exception as exc:  # the GPU decoder refused this image: PIL reads it
            logger.debug("GPU JPEG decoding failed (%s: %s); decoding with PIL", type(exc).__name__, exc)
            self.stats["fallback"] += 1
            return pil_pixels(data.numpy().tobytes(), self.spec)

    def __call__(self, jpegs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        from torchvision.io import ImageReadMode

        try:
            decoded = self.decode(list(jpegs), device=self.device, mode=ImageReadMode.RGB)
            out = [self._finish(image) for image in decoded]
            self.stats["gpu"] += len(out)
            return out
        except Exception as exc:
            logger.debug("GPU JPEG batch decoding failed (%s: %s); one image at a time", type(exc).__name__, exc)
            return [self._one(data) for data in jpegs]


def _decoded_batches(
    samples: Sequence[Sample],
    reader: ImageReader,
    spec: PreprocessSpec,
    batch_size: int,
    num_workers: int,
    gpu: GpuJpegDecoder | None,
    stats: Counter,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(positions, uint8 (B, 3, S, S)) over ``samples`` in order, decoded in ``num_workers`` DataLoader workers
    (and JPEGs on the GPU when ``gpu`` is given)."""
    jpeg_root = reader.root if gpu is not None and isinstance(reader, FileReader) else None
    loader = DataLoader(
        _Decode(samples, reader, spec, jpeg_root),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        persistent_workers=False,
    )
    for positions, done, pixels, jpegs, blob in loader:
        out = torch.empty((len(positions), 3, spec.size, spec.size), dtype=torch.uint8)
        if done:
            out[done] = pixels
            stats["decoded"] += len(done)
        if jpegs:
            assert gpu is not None
            data, lengths = blob
            out[jpegs] = torch.stack(gpu(list(torch.split(data, lengths))))
        yield positions, out


# ---------------------------------------------------------------------------------------------- entries


class _Entry:
    """A valid entry, memory-mapped."""

    def __init__(self, folder: Path, count: int, size: int, crcs: bytes) -> None:
        self.folder = folder
        self.pixels = np.memmap(folder / PIXELS, dtype=np.uint8, mode="r", shape=(count, 3, size, size))
        self.crcs = np.frombuffer(crcs, dtype="<u4")

    def read(self, rows: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
        """The pixels of ``rows`` and the positions (in ``rows``) whose CRC does not match."""
        block = np.asarray(self.pixels[np.asarray(rows, dtype=np.int64)])  # a copy in memory
        bad = [k for k, row in enumerate(rows) if zlib.crc32(block[k]) != int(self.crcs[row])]
        return torch.from_numpy(block), bad


def _remove_folder(folder: Path) -> None:
    """Move a folder out of the way (one rename: nobody sees half of it), then delete it."""
    trash = folder.with_name(f".{folder.name}.{os.getpid()}.{time.monotonic_ns()}.trash")
    try:
        os.rename(folder, trash)
    except OSError:
        return  # gone already (another process removed or replaced it)
    shutil.rmtree(trash, ignore_errors=True)


class _Lock:
    """A non-blocking advisory lock on ``path`` (fcntl.flock; where there is none, every caller gets it)."""

    def __init__(self, path: Path) -> None:
        self.path, self.handle = path, None

    def acquire(self) -> bool:
        try:
            import fcntl
        except ImportError:  # Windows: the rename decides between concurrent builders
            return True
        self.handle = open(self.path, "a+b")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            self.handle.close()
            self.handle = None
            return False

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing releases the lock
            self.handle = None


class _Builder:
    """Writes one entry into a temporary folder; :meth:`finish` renames it into place."""

    def __init__(self, folder: Path, count: int, size: int, key: dict[str, Any], lock: _Lock) -> None:
        self.folder, self.count, self.size, self.key, self.lock = folder, count, size, key, lock
        self.row_bytes = 3 * size * size
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(self.tmp, 0o777 & ~mask)  # mkdtemp makes it 0700; the entry gets the usual permissions
        self.crcs = np.zeros(count, dtype="<u4")
        self.written = np.zeros(count, dtype=bool)
        self.failed: str | None = None
        self.fd = os.open(self.tmp / PIXELS, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:  # reserve the space: a full disk shows now, not in the middle of the test set
                os.posix_fallocate(self.fd, 0, count * self.row_bytes)
            except (AttributeError, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                os.ftruncate(self.fd, count * self.row_bytes)  # a platform or filesystem without it
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.failed is None:
            self.failed = disk_full_message(self.tmp / PIXELS) if is_disk_full(exc) else f"{type(exc).__name__}: {exc}"

    def write(self, rows: Sequence[int], pixels: torch.Tensor) -> None:
        if self.failed is not None:
            return
        block = pixels.numpy()
        try:
            for k, row in enumerate(rows):
                data = np.ascontiguousarray(block[k])
                os.pwrite(self.fd, memoryview(data).cast("B"), row * self.row_bytes)
                self.crcs[row] = zlib.crc32(data)
                self.written[row] = True
        except OSError as exc:
            self._fail(exc)

    def finish(self) -> bool:
        """Flush, write the CRC table and the manifest, rename into place; False when the entry was not kept."""
        try:
            if self.failed is None and not self.written.all():
                self.failed = f"{int((~self.written).sum())} of {self.count} rows were not written"
            if self.failed is not None:
                return False
            os.fsync(self.fd)
            if (self.tmp / PIXELS).stat().st_size != self.count * self.row_bytes:
                self.failed = f"{self.tmp / PIXELS} changed while it was written"
                return False
            crc_bytes = self.crcs.tobytes()
            atomic_write_bytes(self.tmp / CRCS, lambda tmp: Path(tmp).write_bytes(crc_bytes))
            manifest = {
                "format": FORMAT,
                "key": self.key,
                "count": self.count,
                "size": self.size,
                "pixels_bytes": self.count * self.row_bytes,
                "crc_bytes": len(crc_bytes),
                "crc_sha256": hashlib.sha256(crc_bytes).hexdigest(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            atomic_write_text(self.tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
            for name in (CRCS, MANIFEST):
                _fsync(self.tmp / name)
            _fsync(self.tmp)
            try:
                os.rename(self.tmp, self.folder)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):  # another builder finished first: theirs stays
                    logger.debug("%s was built by another process meanwhile; discarding this copy", self.folder)
                    return False
                raise
            _fsync(self.folder.parent)
            return True
        except OSError as exc:
            self._fail(exc)
            return False
        finally:
            self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.lock.release()


def _remove_stale(folder: Path, age_s: float = STALE_S) -> None:
    """Delete the temporary folders of ``folder``'s entry that killed builders left: those not written to for
    ``age_s`` (a live builder writes all the time; where locks do not work, it may not hold one)."""
    now = time.time()
    for stale in folder.parent.glob(f".{folder.name}.*.tmp"):
        try:
            newest = max((p.stat().st_mtime for p in stale.iterdir()), default=stale.stat().st_mtime)
        except OSError:
            continue
        if now - newest > age_s:
            shutil.rmtree(stale, ignore_errors=True)


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a folder
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _entry_bytes(manifest: dict[str, Any]) -> int:
    return int(manifest.get("pixels_bytes", 0)) + int(manifest.get("crc_bytes", 0))


def cache_entries(root: Path | None = None) -> list[tuple[Path, int, float]]:
    """(folder, bytes, last used) of every entry with a readable manifest, least recently used first."""
    root = root or CachePolicy().root
    found = []
    if not root.is_dir():
        return found
    for folder in root.iterdir():
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        manifest = folder / MANIFEST
        try:
            found.append((folder, _entry_bytes(json.loads(manifest.read_text())), manifest.stat().st_mtime))
        except (OSError, ValueError, TypeError, AttributeError):
            found.append((folder, _folder_bytes(folder), 0.0))  # a broken entry: first to go
    return sorted(found, key=lambda item: item[2])


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


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
