"""The run directory: the one place that knows a run's files, how to read and write them, and its state.

One run (dataset, setting, recipe, shots, seed) lives in ``<out>/<dataset>/<setting>/<recipe>/shots<K>/seed<S>/``::

    config.json             resolved settings, signature, versions, command, device and precision
    log.txt                 what the console showed (and the per-epoch lines it did not)
    metrics.jsonl           one record per logged step: step, epoch, lr, loss, ce, reg, acc
    layers.jsonl            per logged step and trained tensor: squared change from init, squared gradients
    checkpoint.safetensors  trained tensors only (init/ and final/; while unfinished also optim/ and rng/)
    checkpoint.json         the checkpoint's metadata, mirrored for people
    results.json            metrics, zero-shot metrics, signature, versions, ...
    run.lock                while a run trains: pid, host and start time of its process
    eval/<target>/results.json  clipfit-eval on other datasets

Training, evaluation and the analyses all reach these files through :class:`RunDir`. A run is
``new`` (nothing yet), ``partial`` (a checkpoint but no results: resumable) or ``finished``.

Nothing is lost when a run dies at any point (a kill, a full disk) and the same command is run
again: the checkpoint and every JSON file are replaced atomically (:mod:`clipfit.files`), the logs
are read up to their last whole record and cut back to the step the run restarts from, and the
temporary files of interrupted writes are removed when a run starts. One process at a time trains
into a folder: it holds ``run.lock`` for the whole run (:mod:`clipfit.runlock`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clipfit.checkpoint import Checkpoint, CheckpointError, read_checkpoint, write_checkpoint
from clipfit.config import RunConfig, flatten_settings, resolve
from clipfit.data.registry import dataset_slug
from clipfit.errors import ConfigError, RunError
from clipfit.files import append_text, atomic_write_text, remove_temp_files
from clipfit.runlock import LOCK_FILE, RunLock
from clipfit.runlock import RunLockedError as RunLockedError  # re-exported for `from clipfit.rundir import ...`

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
LOG_FILE = "log.txt"
METRICS_FILE = "metrics.jsonl"
LAYERS_FILE = "layers.jsonl"
CHECKPOINT_FILE = "checkpoint.safetensors"
CHECKPOINT_META_FILE = "checkpoint.json"
ERROR_FILE = "error.txt"  # why the last attempt of a sweep's cell failed (clipfit.sweeps); removed when it finishes
EVAL_DIR = "eval"
RUN_FILES = (
    CONFIG_FILE, RESULTS_FILE, LOG_FILE, METRICS_FILE, LAYERS_FILE, CHECKPOINT_FILE, CHECKPOINT_META_FILE, LOCK_FILE,
    ERROR_FILE,
)  # fmt: skip

# Settings that change how fast a run goes or how it logs, never its results: they may differ on resume.
RESULT_NEUTRAL = {
    ("device",), ("eval_batch_size",), ("data", "num_workers"), ("log_every",), ("compile",), ("grad_checkpointing",),
    ("checkpoint_every",), ("val_every",), ("eval_cache",),
}  # fmt: skip


class SettingsMismatchError(RunError):
    """The run directory holds a run of other settings: nothing of this run was attempted there."""


def default_run_dir(out: str | Path, cfg: RunConfig) -> Path:
    """``<out>/<dataset>/<setting>/<recipe>/shots<K>/seed<S>`` of a resolved config."""
    dataset = dataset_slug(cfg.data.dataset)
    return Path(out) / dataset / cfg.data.setting / cfg.recipe / f"shots{cfg.data.shots}" / f"seed{cfg.seed}"


def eval_run_dir(out: str | Path, target: str, writable: bool = True) -> RunDir:
    """Where clipfit-eval writes a target's results: ``<out>/<target>`` (``out`` defaults to ``<run>/eval``)."""
    return RunDir(Path(out) / dataset_slug(target), writable)


def default_eval_root(path: str | Path) -> Path:
    """``<run>/eval`` of a run directory or of a checkpoint file inside one."""
    return checkpoint_file(path).parent / EVAL_DIR


def checkpoint_file(path: str | Path) -> Path:
    """A run directory or a checkpoint file -> the checkpoint file."""
    path = Path(path).expanduser()
    return path / CHECKPOINT_FILE if path.is_dir() else path


def _parse_jsonl(path: Path) -> tuple[list[str], list[dict[str, Any]], list[int]]:
    """(lines of whole records, the records, numbers of the lines that are not whole records)."""
    lines, records, broken = [], [], []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            lines.append(line)
            records.append(record)
        else:
            broken.append(number)
    return lines, records, broken


def _report_torn(path: Path, broken: list[int], what: str) -> None:
    if broken:
        shown = ", ".join(map(str, broken[:5])) + (", ..." if len(broken) > 5 else "")
        logger.warning(
            "%s: %s %d line(s) that are not whole JSON records (line %s), as a crash or a full disk leaves them",
            path, what, len(broken), shown,
        )  # fmt: skip


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The whole records of a JSON-lines log (metrics.jsonl, layers.jsonl).

    A process killed (or a disk filled) while appending leaves a torn last line; the logs of older
    versions could also hold one in the middle. Those lines are dropped with a warning naming them,
    so a run stays readable up to its last whole record.
    """
    _, records, broken = _parse_jsonl(path)
    _report_torn(path, broken, "dropped")
    return records


class JsonlLog:
    """An append-only JSON-lines log of a run (metrics.jsonl, layers.jsonl); ``None`` path: writes nothing.

    ``check`` runs before every write (the run directory's lock check: a run that lost its folder to
    another process must not append to that process's logs).
    """

    def __init__(self, path: Path | None, check: Callable[[], None] | None = None) -> None:
        self.path = path
        self._check = check or (lambda: None)

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self.path is None or not rows:
            return
        self._check()
        append_text(self.path, "".join(json.dumps(row) + "\n" for row in rows))

    def truncate_after(self, step: int) -> None:
        """Keep the whole records up to ``step``, the step a run (re)starts from: 0 for a fresh start, the
        checkpoint's step on resume. Drops what a killed attempt logged after that point (so nothing is
        logged twice) and torn lines; the file is rewritten atomically, and only when something goes."""
        if self.path is None or not self.path.exists():
            return
        self._check()
        if step == 0:  # a fresh start: an earlier attempt died before its first checkpoint
            logger.info("%s: removing the records of an earlier attempt that wrote no checkpoint", self.path)
            self.path.unlink()
            return
        lines, records, broken = _parse_jsonl(self.path)
        keep = [line for line, record in zip(lines, records, strict=True) if record.get("step", 0) <= step]
        if len(keep) < len(lines) or broken:
            _report_torn(self.path, broken, "removed")
            atomic_write_text(self.path, "".join(line + "\n" for line in keep))


def _read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object file of a run; unreadable, non-JSON or non-object contents are a RunError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise RunError(f"cannot read {path}: {reason}") from None
    if not isinstance(data, dict):
        raise RunError(f"{path} is not a JSON object: it was not written by clipfit-train")
    return data


class _RunLogHandler(logging.FileHandler):
    """log.txt. A write that fails (a full disk) stops the copy instead of printing a traceback per record
    (logging's default); the console keeps showing everything, and the run's next write names the cause."""

    failed: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.failed is None:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self.failed = sys.exc_info()[1]

    def close(self) -> None:
        try:
            super().close()  # flushes what is buffered
        except OSError as exc:
            self.failed = self.failed or exc


class RunDir:
    """One run's folder. Only the main process of a distributed job writes (``writable=False`` elsewhere)."""

    def __init__(self, path: str | Path, writable: bool = True) -> None:
        self.path = Path(path).expanduser()
        self.writable = writable
        self._lock: RunLock | None = None  # held while a run trains into the folder (see locked)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> str:
        """``finished`` (results.json), ``partial`` (a checkpoint, no results), or ``new``."""
        if self.file(RESULTS_FILE).is_file():
            return "finished"
        if self.file(CHECKPOINT_FILE).is_file():
            return "partial"
        return "new"

    def settings_differences(self, cfg: RunConfig) -> list[str]:
        """The result-relevant settings in which ``cfg`` differs from the run recorded here ("key: old -> new")."""
        old = self.config()
        # Old records are resolved by today's rules; a setting added later takes the value that reproduces what
        # the old version did (config.json without train_cache reads as crop-size), which may differ from
        # today's default: then it counts as changed.
        a = flatten_settings(resolve(old).to_dict()) if old is not None else {}
        b = flatten_settings(cfg.to_dict())
        return [
            f"{'.'.join(k)}: {a.get(k)!r} -> {b.get(k)!r}"
            for k in sorted(set(a) | set(b))
            if k not in RESULT_NEUTRAL and a.get(k) != b.get(k)
        ]

    def prepare(self, cfg: RunConfig, overwrite: bool) -> None:
        """Refuse a run directory that holds another run; with ``overwrite``, delete this run's files."""
        state = self.state
        if state != "new" and not overwrite:
            diff = self.settings_differences(cfg)
            if diff:
                hint = (
                    " (runs written before --train-cache existed cropped from a crop-size cache: add --train-cache "
                    "crop-size to continue or reuse them)"
                    if any(d.startswith("data.train_cache:") for d in diff)
                    else ""
                )
                raise SettingsMismatchError(
                    f"{self.path} already holds a {state} run with other settings ({'; '.join(diff)}){hint}. "
                    "Use another --out, or --overwrite to replace it."
                )

    def clear(self) -> None:
        """Delete the run's files (``--overwrite``), nothing else in the folder (and not the lock of this run)."""
        for name in RUN_FILES:
            if name != LOCK_FILE:
                self.file(name).unlink(missing_ok=True)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock while a run trains into it (a writable RunDir only: under torchrun, rank 0).

        Taking it fails with :class:`RunLockedError` while another live process holds it. Then the
        temporary files that writes interrupted by a kill left behind are removed (the run's own
        files only: under the lock no other process writes them).
        """
        if not self.writable:
            yield
            return
        lock = RunLock(self.path)
        lock.acquire()
        self._lock = lock
        try:
            removed = remove_temp_files(self.path, RUN_FILES)
            if removed:
                names = ", ".join(p.name for p in removed)
                logger.info("removed %d temporary file(s) of interrupted writes: %s", len(removed), names)
            yield
        finally:
            self._lock = None
            lock.release()

    def _check_lock(self) -> None:
        if self._lock is not None:
            self._lock.check()

    # ------------------------------------------------------------------ records

    def record(self) -> dict[str, Any] | None:
        """config.json as written (settings under "config", plus signature, versions, command, ...)."""
        path = self.file(CONFIG_FILE)
        if not path.exists():
            return None
        record = _read_json_object(path)
        if not isinstance(record.get("config"), dict):
            raise RunError(f'{path} holds no "config" object: it is not a clipfit-train config.json')
        return record

    def config(self) -> RunConfig | None:
        """The run's settings, or None when config.json is missing."""
        record = self.record()
        if record is None:
            return None
        try:
            return RunConfig.from_dict(record["config"])
        except ConfigError as exc:
            raise RunError(f"{self.file(CONFIG_FILE)}: {exc}") from None

    def write_config(self, record: dict[str, Any]) -> None:
        if self.writable:
            self._check_lock()
            atomic_write_text(self.file(CONFIG_FILE), json.dumps(record, indent=2) + "\n")

    def results(self) -> dict[str, Any]:
        path = self.file(RESULTS_FILE)
        results = _read_json_object(path)
        broken = [k for k in ("metrics", "zero_shot") if not isinstance(results.get(k), dict)]
        if broken or not isinstance(results.get("recipe"), str):
            raise RunError(f"{path} lacks {', '.join(broken) or 'recipe'}: it is not the results.json of a clipfit run")
        return results

    def write_results(self, results: dict[str, Any]) -> None:
        if self.writable:
            self._check_lock()
            atomic_write_text(self.file(RESULTS_FILE), json.dumps(results, indent=2) + "\n")

    def write_error(self, text: str) -> None:
        """Why this run failed (a sweep writes it for a failed cell; the folder is created if needed)."""
        if self.writable:
            atomic_write_text(self.file(ERROR_FILE), text if text.endswith("\n") else text + "\n")

    def clear_error(self) -> None:
        if self.writable:
            self.file(ERROR_FILE).unlink(missing_ok=True)

    # ------------------------------------------------------------------ logs

    def log(self, name: str) -> JsonlLog:
        """metrics.jsonl or layers.jsonl as an append-only log (writes nothing unless writable)."""
        return JsonlLog(self.file(name), self._check_lock) if self.writable else JsonlLog(None)

    @property
    def layers_file(self) -> Path | None:
        """The per-step layer log, when there is one."""
        path = self.file(LAYERS_FILE)
        return path if path.is_file() else None

    @contextmanager
    def console_log(self) -> Iterator[None]:
        """Copy clipfit's log records (debug and up) into log.txt while the body runs."""
        if not self.writable:
            yield
            return
        handler = _RunLogHandler(self.file(LOG_FILE), encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.DEBUG)
        logging.getLogger("clipfit").addHandler(handler)
        try:
            yield
        finally:
            logging.getLogger("clipfit").removeHandler(handler)
            handler.close()
        if handler.failed is not None:  # after a failed body its own error says enough
            logger.warning("%s is incomplete: writing it failed (%s)", handler.baseFilename, handler.failed)

    # ------------------------------------------------------------------ checkpoint

    def checkpoint(self) -> Checkpoint:
        return read_checkpoint(self.file(CHECKPOINT_FILE))

    def save_checkpoint(self, init, final, meta, optim=None, rng=None) -> None:
        """Write checkpoint.safetensors and its checkpoint.json mirror (atomically; main process only)."""
        if self.writable:
            self._check_lock()
            write_checkpoint(self.file(CHECKPOINT_FILE), init, final, meta, optim, rng, self.file(CHECKPOINT_META_FILE))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint of a run directory, or a checkpoint file itself."""
    file = checkpoint_file(path)
    if not file.is_file():
        hint = " (the run has not finished an epoch yet?)" if file.parent.is_dir() else ""
        raise CheckpointError(f"no clipfit checkpoint at {file}{hint}; expected a run directory of clipfit-train")
    return read_checkpoint(file)


def load_run(path: str | Path) -> tuple[RunConfig, Checkpoint, RunDir | None]:
    """The settings and checkpoint of a run directory, or of a bare checkpoint file.

    Returns (settings, checkpoint, the run directory when the checkpoint sits in one with a
    config.json). A bare checkpoint's settings are rebuilt from what its metadata records.
    """
    ckpt = load_checkpoint(path)
    run = RunDir(checkpoint_file(path).parent)
    cfg = run.config()
    if cfg is not None:
        return cfg, ckpt, run
    # a bare checkpoint: rebuild what matters from its metadata
    cfg = RunConfig()
    meta = ckpt.meta
    cfg.model.name, cfg.model.pretrained = meta.get("model"), meta.get("pretrained")
    cfg.recipe = meta.get("recipe", cfg.recipe)
    cfg.data.dataset = meta.get("dataset", cfg.data.dataset)
    cfg.data.setting = meta.get("setting", cfg.data.setting)
    cfg.data.shots, cfg.seed = meta.get("shots", cfg.data.shots), meta.get("seed", cfg.seed)
    return cfg, ckpt, None
