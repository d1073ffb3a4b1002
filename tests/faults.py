"""Failure injection for the reliability suites: count the writes a run makes, and let one fail part-way.

A *write* is one of the two ways clipfit puts bytes into a run directory (:mod:`clipfit.files`): an
atomic replace (a finished temporary file renamed onto its target: the checkpoint, config.json,
results.json, ...) or an append to a log (metrics.jsonl, layers.jsonl). Write number ``fail_at``
(1-based, counting only files inside ``folder``) goes half-way, then fails as ``how`` says:

- ``enospc``: the disk is full: OSError(ENOSPC), the error clipfit must turn into one clear line;
- ``interrupt``: KeyboardInterrupt (Ctrl-C): Python's ``finally`` blocks still run;
- ``die``: SystemExit, and clipfit.files' own cleanup is skipped, so the half-written temporary file
  stays as a kill would leave it (in process, so other ``finally`` blocks, such as the lock's, run);

``fail_at`` is a number (the N-th counted write) or ``"NAME#K"`` (the K-th write of that file).

The same class drives in-process tests (through pytest's monkeypatch).
"""

from __future__ import annotations

import errno
import os
import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import clipfit.files

HOW = ("enospc", "interrupt", "die")


@dataclass
class Write:
    kind: str  # "replace" or "append"
    name: str  # the file's name in the folder


@dataclass
class Faults:
    folder: Path | str
    fail_at: int | str | None = None  # the N-th counted write, "NAME#K", or None: count only
    how: str = "enospc"
    writes: list[Write] = field(default_factory=list)
    failed: Write | None = None
    _dead: bool = False  # "die": the process is gone as far as clipfit.files' cleanup is concerned

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).resolve()
        if self.how not in HOW:
            raise ValueError(f"how must be one of {HOW}")

    def install(self, set_attribute: Callable[[Any, str, Any], None]) -> Faults:
        """Patch clipfit.files' ``os`` and ``pathlib.Path.open`` (``monkeypatch.setattr`` or ``setattr``)."""
        set_attribute(clipfit.files, "os", _Os(self))
        real_open = pathlib.Path.open

        def open_(path: pathlib.Path, mode: str = "r", *args: Any, **kwargs: Any):
            handle = real_open(path, mode, *args, **kwargs)
            return _Torn(handle, self) if "a" in mode and self._fails("append", path) else handle

        set_attribute(pathlib.Path, "open", open_)
        return self

    def _fails(self, kind: str, path: str | Path) -> bool:
        """Count a write; True when it is the one that fails."""
        path = Path(path).resolve()
        if path.parent != self.folder:
            return False
        self.writes.append(Write(kind, path.name))
        of_name = sum(1 for w in self.writes if w.name == path.name)
        if self.fail_at in (len(self.writes), f"{path.name}#{of_name}"):
            self.failed = self.writes[-1]
            return True
        return False

    def fail(self) -> None:
        if self.how == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device")
        if self.how == "interrupt":
            raise KeyboardInterrupt
        if self.how == "die":
            self._dead = True
            raise SystemExit(137)


class _Os:
    """clipfit.files' view of ``os``: the counted replace fails after truncating the temporary file to half."""

    def __init__(self, faults: Faults) -> None:
        self._faults = faults

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def replace(self, src: str, dst: str | Path) -> None:
        if self._faults._fails("replace", dst):
            os.truncate(src, os.path.getsize(src) // 2)
            self._faults.fail()
        os.replace(src, dst)

    def unlink(self, path: str) -> None:
        if not self._faults._dead:
            os.unlink(path)


class _Torn:
    """An append handle that writes half of what it is given, then fails."""

    def __init__(self, handle: Any, faults: Faults) -> None:
        self._handle, self._faults = handle, faults

    def write(self, text: str) -> int:
        self._handle.write(text[: len(text) // 2])
        self._handle.flush()
        self._faults.fail()
        return len(text)

    def __enter__(self) -> _Torn:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()
