"""Failure injection for the reliability suites: count the writes a run makes, and let one fail part-way.

A *write* is one of the two ways clipfit puts bytes into a run directory (:mod:`clipfit.files`): an
atomic replace (a finished temporary file renamed onto its target: the checkpoint, config.json,
results.json, ...) or an append to a log (metrics.jsonl, layers.jsonl). Write number ``fail_at``
(1-based, counting only files inside ``folder``) goes half-way, then fails as ``how`` says:

- ``enospc``: the disk is full: OSError(ENOSPC), the error clipfit must turn into one clear line;
- ``interrupt``: KeyboardInterrupt (Ctrl-C): Python's ``finally`` blocks still run;
- ``die``: SystemExit, and clipfit.files' own cleanup is skipped, so the half-written temporary file
  stays as a kill would leave it (in process, so other ``finally`` blocks, such as the lock's, run);
- ``kill``: SIGKILL of the process itself: nothing after it runs (for runs in a subprocess).

``fail_at`` is a number (the N-th counted write) or ``"NAME#K"`` (the K-th write of that file).

The same class drives in-process tests (through pytest's monkeypatch) and real ``kill -9`` runs in
child processes of a :class:`Zygote`.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import clipfit.files

HOW = ("enospc", "interrupt", "die", "kill")


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
        os.kill(os.getpid(), signal.SIGKILL)


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


# The zygote: a process that imports clipfit once, then forks one child per run, so that a run killed
# with SIGKILL costs its own time only, not the interpreter's start and torch's import again. It never
# runs a torch operation itself, so the children start with no thread pool to inherit.
ZYGOTE = r"""
import json, os, signal, sys, time, traceback
import torch
threads = int(sys.argv[1])
from faults import Faults
from clipfit.cli import train
from clipfit.data.registry import load_dataset
for name in sys.argv[2:]:  # generate datasets once (the shapes world: numpy only), as one pytest session does
    load_dataset(name)

channel = os.fdopen(os.dup(1), "w")
for line in sys.stdin:
    job = json.loads(line)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            channel.close()
            out = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, 1)
            os.dup2(out, 2)
            torch.set_num_threads(threads)
            if job["fail_at"]:
                Faults(job["folder"], job["fail_at"], "kill").install(setattr)
            code = train.main(job["argv"])
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    killed = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if job["kill_after"] is not None and time.monotonic() - started >= job["kill_after"] and not killed:
            os.kill(pid, signal.SIGKILL)
            killed = True
        time.sleep(0.005)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    channel.write(json.dumps({"code": code, "seconds": time.monotonic() - started, "killed": killed}) + "\n")
    channel.flush()
"""


@dataclass
class Attempt:
    code: int  # exit status, -9 when SIGKILL ended it
    seconds: float  # how long it ran
    log: str  # what it printed


class Zygote:
    """Runs clipfit-train in forked children of one long-lived process; a child may be SIGKILLed after a
    delay (``kill_after``) or kill itself in the middle of a chosen write (``fail_at``, see :class:`Faults`)."""

    def __init__(self, workdir: Path, env: dict[str, str], threads: int, datasets: tuple[str, ...] = ()) -> None:
        self.workdir = Path(workdir)
        self.count = 0
        self.process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, str(threads), *datasets], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, cwd=workdir, text=True,
        )  # fmt: skip

    def run(self, argv: list[str], folder: Path, *, fail_at: int | str | None = None, kill_after: float | None = None):
        self.count += 1
        log = self.workdir / f"attempt{self.count}.log"
        job = {"argv": argv, "folder": str(folder), "fail_at": fail_at, "kill_after": kill_after, "log": str(log)}
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline()
        if not reply:
            raise RuntimeError(f"the zygote died (exit status {self.process.wait()})")
        result = json.loads(reply)
        printed = log.read_text(errors="replace") if log.exists() else ""  # none when killed before it opened it
        return Attempt(result["code"], result["seconds"], printed)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)
