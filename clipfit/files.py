"""Writing files so that a crash never leaves half of one, and a full disk ends in one clear error.

Every file clipfit writes into a run directory, a split folder or a cache goes through
:func:`atomic_write_bytes`: the content is written to a temporary file ``.<name>.<random>.tmp`` in
the same folder, then renamed onto the target (a rename within one folder is atomic on POSIX and
Windows). A process killed during the write leaves the target as it was, plus that temporary file;
:func:`remove_temp_files` clears such leftovers of named files (a run does it when it starts).

The JSON-lines logs are appended to instead (:func:`append_text`): a kill or a full disk can tear
their last line, which their reader (:func:`clipfit.rundir.read_jsonl`) tolerates.

A write that fails because the disk or the quota is full raises :class:`DiskFullError`, which
names the file and the free space: the console prints it as one line, never a traceback.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from clipfit.errors import ClipfitError

# ENOSPC: no space left on the device; EDQUOT: the user's quota is used up. Both are cured by freeing space.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(ClipfitError, OSError):
    """A write failed because the disk (or the quota) is full. An OSError too, so fallbacks that catch
    OSError (another folder for a file that cannot be written) still apply."""

    def __init__(self, path: str | Path | None) -> None:
        super().__init__(errno.ENOSPC, disk_full_message(path), None if path is None else str(path))

    def __str__(self) -> str:
        return self.strerror or "no space left on the device"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk or quota is full. safetensors reports it as a SafetensorError without an
    errno, only "... (os error 28)" in its message, so the message is checked too."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    return any(f"(os error {code})" in str(exc) for code in DISK_FULL_ERRNOS)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def free_space(path: str | Path) -> str:
    """The free space of the filesystem holding ``path`` (or its nearest existing parent), e.g. ``12.5 MB``."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return _size(shutil.disk_usage(folder).free)
    except OSError:
        return "unknown"


def disk_full_message(path: str | Path | None) -> str:
    """The one line a full disk ends in: the file, the free space, and what to do."""
    where = f"writing {path} ({free_space(path)} free there)" if path else "writing a file"
    return (
        f"no space left on the device (or quota exceeded) {where}; free some space and run the same command "
        "again: a run continues from its last checkpoint"
    )


@contextmanager
def disk_full_as_error(path: str | Path) -> Iterator[None]:
    """Turn a disk-full failure of writing ``path`` into a :class:`DiskFullError` naming it."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if is_disk_full(exc):
            raise DiskFullError(path) from None
        raise


def atomic_write_bytes(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
    with disk_full_as_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            write(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def append_text(path: Path, text: str) -> None:
    """Append UTF-8 ``text`` to ``path`` (created if missing); a full disk raises :class:`DiskFullError`."""
    with disk_full_as_error(path), Path(path).open("a", encoding="utf-8") as handle:
        handle.write(text)


def temp_files(folder: Path, names: Iterable[str]) -> list[Path]:
    """The temporary files :func:`atomic_write_bytes` leaves in ``folder`` when a process dies while writing
    one of ``names`` (``.<name>.<random>.tmp``, the random part as :func:`tempfile.mkstemp` makes it)."""
    patterns = [re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]+\.tmp") for name in names]
    if not Path(folder).is_dir():
        return []
    return sorted(p for p in Path(folder).iterdir() if any(pattern.fullmatch(p.name) for pattern in patterns))


def remove_temp_files(folder: Path, names: Iterable[str]) -> list[Path]:
    """Delete the leftover temporary files of ``names`` in ``folder`` (and nothing else); returns them.

    Only safe while no other process writes those files (a run holds its directory's lock).
    """
    removed = temp_files(folder, names)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


class OutputError(ClipfitError):
    """A folder clipfit must write into cannot be written; the message names it and why."""


def check_output_folder(path: str | Path, what: str, files: tuple[str, ...] = ()) -> Path:
    """Refuse, before any work, an output folder that cannot be created or written; creates nothing.

    Checks that ``path`` is valid UTF-8 (the safetensors and JSON files clipfit writes need it),
    that its nearest existing ancestor is a folder this process can write (not a file, not on a
    read-only file system), and that none of ``files`` inside it is something other than a file.
    ``what`` names the folder in the message (``--out``, ``the run directory``).
    """
    path = Path(path).expanduser()
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        raise OutputError(f"{what} {str(path)!r} is not valid UTF-8; choose a folder whose name is") from None
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == path else f" ({existing} is a file)"
        raise OutputError(f"{what} {path} is not a folder{where}; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path} cannot be written: {existing} is read-only (file system or permissions)")
    for name in files:
        inside = path / name
        if os.path.lexists(inside) and not inside.is_file():
            raise OutputError(f"{what} {path}: {inside} is not a file (a folder?); remove it")
    return path
