"""The lock of a run directory: one process at a time trains into a folder.

A run holds :data:`LOCK_FILE` (``run.lock``: pid, host and start time of its process, and its command line) for
the whole run (:class:`RunLock`, taken through :meth:`clipfit.rundir.RunDir.locked`). A second run into the same
folder stops with a message naming the holder; a lock whose holder is gone (see :meth:`LockHolder.stale_reason`)
is reported and taken over; a run whose lock another process took over stops before its next write
(:meth:`RunLock.check`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from contextlib import suppress
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from clipfit.errors import RunError
from clipfit.files import DiskFullError, disk_full_as_error

logger = logging.getLogger(__name__)

LOCK_FILE = "run.lock"

# A live run refreshes its lock file's time every LOCK_REFRESH_S. A lock of this machine is stale when its
# process is gone; one of another host (whose processes cannot be checked from here) when it has not been
# refreshed for LOCK_STALE_S: a run suspended that long loses its folder (it stops before its next write).
LOCK_REFRESH_S = 60.0
LOCK_STALE_S = 15 * 60.0
_LOCK_WRITE_GRACE_S = 30.0  # an unreadable lock file younger than this is still being written by its creator
_TAKEOVER_FILE = ".run.lock.takeover"  # held for the instant of removing a stale lock (O_EXCL, like the lock)


class RunLockedError(RunError):
    """Another live process trains into the run directory (or took it over from this one)."""


def _proc(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:  # not Linux, or no such process
        return None


def _process_start(pid: int) -> str | None:
    """A Linux process's identity beyond its pid (boot id and start tick): a reused pid differs; None elsewhere."""
    stat, boot = _proc(f"/proc/{pid}/stat"), _proc("/proc/sys/kernel/random/boot_id")
    if stat is None or boot is None:
        return None
    fields = stat.rpartition(")")[2].split()  # after "pid (command name)": field 3 onwards
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None


def _pid_namespace() -> str | None:
    """Containers on one host may share a hostname but not their pids."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@dataclass(frozen=True)
class LockHolder:
    """Who holds a run directory's lock: the content of its lock file."""

    pid: int
    host: str
    started: str  # ISO time the lock was taken
    command: str  # the command line of the holder
    process_start: str | None = None  # see _process_start
    pid_namespace: str | None = None

    @classmethod
    def this_process(cls) -> LockHolder:
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
            command=" ".join(sys.argv),
            process_start=_process_start(os.getpid()),
            pid_namespace=_pid_namespace(),
        )

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, since {self.started}, running `{self.command}`"

    def stale_reason(self, age: float) -> str | None:
        """Why this lock no longer guards a live run (``age``: seconds since it was last refreshed), or None."""
        if self.host == socket.gethostname() and self.pid_namespace == _pid_namespace():
            if not _alive(self.pid):
                return f"process {self.pid} no longer runs"
            now = _process_start(self.pid)
            if self.process_start and now and now != self.process_start:
                return f"pid {self.pid} now belongs to another process"
            return None
        if age > LOCK_STALE_S:
            minutes = f"{age / 60:.0f} min, over the {LOCK_STALE_S / 60:.0f} min limit"
            return f"a lock of another host or container not refreshed for {minutes}"
        return None


class RunLock:
    """The lock file of a run directory: one process at a time trains into a folder.

    Taken with ``O_CREAT | O_EXCL`` (atomic, also on NFS), it records the holder's pid, host, start
    time and command, and a thread refreshes its time while the run lives. A stale lock (see
    :meth:`LockHolder.stale_reason`) is reported and taken over; a live one stops the second run
    with a message naming the holder. Under torchrun only rank 0 locks.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._content: bytes | None = None  # what this process wrote: the lock is ours while the file holds it
        self._stop = threading.Event()
        self._created: list[Path] = []  # folders made for the run, removed again if the run leaves them empty

    def holder(self) -> LockHolder | None:
        """Who holds the lock now (None: nobody, or a lock file that is not readable)."""
        return self._read()[0]

    def _read(self) -> tuple[LockHolder | None, bytes | None, float]:
        """(holder, raw content, seconds since the file was last refreshed); raw None when there is no lock."""
        try:
            raw = self.path.read_bytes()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None, None, 0.0
        try:
            holder = LockHolder(**json.loads(raw))
        except (ValueError, TypeError):
            holder = None
        return holder, raw, age

    def acquire(self) -> None:
        """Take the lock (creating the folder), or raise :class:`RunLockedError` naming its live holder."""
        content = (json.dumps(asdict(LockHolder.this_process()), indent=2) + "\n").encode()
        self._make_folder()
        for _ in range(100):
            try:
                with disk_full_as_error(self.path):
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._remove_if_stale()
                continue
            except DiskFullError:
                raise
            except OSError as exc:
                raise RunError(f"cannot create {self.path}: {exc.strerror or exc}") from None
            try:
                with disk_full_as_error(self.path), os.fdopen(fd, "wb") as handle:
                    handle.write(content)
            except BaseException:
                self.path.unlink(missing_ok=True)
                raise
            self._content = content
            self._stop = threading.Event()
            threading.Thread(target=self._refresh, name="clipfit-run-lock", daemon=True).start()
            logger.debug("locked %s", self.folder)
            return
        raise RunLockedError(f"could not take {self.path}: other processes keep taking it")

    def _make_folder(self) -> None:
        missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        try:
            with disk_full_as_error(self.folder):
                self.folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise RunError(f"cannot use {self.folder} as a run directory: it is a file") from None
        except NotADirectoryError:
            raise RunError(f"cannot create the run directory {self.folder}: a parent of it is a file") from None
        except DiskFullError:
            raise
        except OSError as exc:
            raise RunError(f"cannot create the run directory {self.folder}: {exc.strerror or exc}") from None
        self._created = missing  # deepest first

    def _remove_if_stale(self) -> None:
        """Remove the lock file if its holder is gone; raise :class:`RunLockedError` if it lives.

        Removing happens under a second O_EXCL file, after checking that the lock is still the one
        judged stale: two processes that find the same stale lock cannot both take the folder.
        """
        holder, raw, age = self._read()
        if raw is None:
            return  # released meanwhile: try again
        if holder is None:
            reason = f"an unreadable lock file {age:.0f} s old" if age > _LOCK_WRITE_GRACE_S else None
        else:
            reason = holder.stale_reason(age)
        if reason is None:
            who = holder.describe() if holder else "a process that is just taking it"
            raise RunLockedError(
                f"{self.folder} is in use by another run ({who}): wait for it to finish, or train into another "
                f"--out or --run-dir. If that process is gone, delete {self.path}"
            )
        takeover = self.folder / _TAKEOVER_FILE
        try:
            fd = os.open(takeover, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:  # another process is removing it; look again shortly
            try:
                if time.time() - takeover.stat().st_mtime > _LOCK_WRITE_GRACE_S:  # left by a process killed there
                    takeover.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            time.sleep(0.05)
            return
        try:
            if self._read()[1] == raw:
                self.path.unlink()
                logger.warning(
                    "taking over %s: the run that held it is gone (%s; %s)",
                    self.path, reason, holder.describe() if holder else "no holder recorded",
                )  # fmt: skip
        finally:
            os.close(fd)
            takeover.unlink(missing_ok=True)

    def _refresh(self) -> None:
        while not self._stop.wait(LOCK_REFRESH_S):
            with suppress(OSError):  # gone or unwritable: check() says so before the run's next write
                os.utime(self.path)

    def check(self) -> None:
        """Raise :class:`RunLockedError` if the lock is no longer this process's (another process judged the
        run dead and took its folder over): the run must not write into a folder another run now owns."""
        if self._content is None:
            return
        holder, raw, _ = self._read()
        if raw != self._content:
            now = f"it is now held by {holder.describe()}" if holder else "its lock file is gone"
            raise RunLockedError(f"this run lost {self.path} ({now}); stopping before writing into {self.folder}")

    def release(self) -> None:
        """Give the lock up (if it is still ours) and remove the folders made for a run that wrote nothing."""
        self._stop.set()
        if self._content is not None:
            try:
                if self.path.read_bytes() == self._content:
                    self.path.unlink()
                else:
                    logger.warning("%s is no longer this run's lock; left as it is", self.path)
            except FileNotFoundError:
                pass
            self._content = None
        for folder in self._created:
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
        self._created = []
