"""The entries of the test-set cache on disk: their layout, writing one, listing them.

An entry is a folder ``<cache>/testsets/<dataset>-<size>px-<decoder>-<key>/`` (``<cache>``:
:func:`clipfit.data.splits.cache_dir`; the key and the checks before use are :mod:`clipfit.data.testcache`'s)
holding

- ``pixels.u8``: N x 3 x S x S uint8, row i the i-th image of the test split;
- ``crc32.u32``: the CRC-32 of every row (little-endian uint32), checked before the row is used;
- ``manifest.json``: what the key was made of, N, S, the two files' sizes and the SHA-256 of ``crc32.u32``.

An entry is written into a temporary folder beside it (:class:`_Builder`) and renamed into place once its files are
flushed and its manifest (written last) is there. One process builds an entry at a time (``<entry>.lock``, an
advisory lock: :class:`_Lock`). Builders that cannot see each other's lock (some network filesystems) both write
temporary folders: the first rename wins and the other discards its copy. Temporary folders of killed builders are
removed once they are old (:data:`STALE_S`); an entry goes with one rename out of the way (:func:`_remove_folder`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipfit.data.splits import cache_dir
from clipfit.files import atomic_write_bytes, atomic_write_text, disk_full_message, is_disk_full

logger = logging.getLogger(__name__)

FORMAT = 1  # layout of an entry; another value is another key
PIXELS, CRCS, MANIFEST = "pixels.u8", "crc32.u32", "manifest.json"
STALE_S = 3600.0  # a temporary entry folder untouched this long was left by a killed builder


def entries_root() -> Path:
    """Where entries live (read when used: tests and users move $CLIPFIT_CACHE)."""
    return cache_dir() / "testsets"


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
        """Idempotent: the descriptor is closed once (a second os.close could close a number another thread has
        just been given)."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)
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
    root = root or entries_root()
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
