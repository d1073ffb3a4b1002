"""Writing files so that a crash never leaves half of one.

Every file clipfit writes into a run directory, a split folder or a cache goes through
:func:`atomic_write_bytes`: the content is written to a temporary file in the same folder, then
renamed onto the target (a rename within one folder is atomic on POSIX and Windows).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from clipfit.errors import ClipfitError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
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
