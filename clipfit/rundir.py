"""The run directory: the one place that knows a run's files, how to read and write them, and its state.

One run (dataset, setting, recipe, shots, seed) lives in ``<out>/<dataset>/<setting>/<recipe>/shots<K>/seed<S>/``::

    config.json             resolved settings, signature, versions, command, device and precision
    log.txt                 what the console showed (and the per-epoch lines it did not)
    metrics.jsonl           one record per logged step: step, epoch, lr, loss, ce, reg, acc
    layers.jsonl            per logged step and trained tensor: squared change from init, squared gradients
    checkpoint.safetensors  trained tensors only (init/ and final/; while unfinished also optim/ and rng/)
    checkpoint.json         the checkpoint's metadata, mirrored for people
    results.json            metrics, zero-shot metrics, signature, versions, ...
    eval/<target>/results.json  clipfit-eval on other datasets

Training, evaluation and the analyses all reach these files through :class:`RunDir`. A run is
``new`` (nothing yet), ``partial`` (a checkpoint but no results: resumable) or ``finished``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clipfit.checkpoint import Checkpoint, CheckpointError, read_checkpoint, write_checkpoint
from clipfit.config import RunConfig, resolve
from clipfit.data.registry import dataset_slug
from clipfit.errors import ClipfitError, ConfigError
from clipfit.files import atomic_write_text

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
LOG_FILE = "log.txt"
METRICS_FILE = "metrics.jsonl"
LAYERS_FILE = "layers.jsonl"
CHECKPOINT_FILE = "checkpoint.safetensors"
CHECKPOINT_META_FILE = "checkpoint.json"
EVAL_DIR = "eval"
RUN_FILES = (CONFIG_FILE, RESULTS_FILE, LOG_FILE, METRICS_FILE, LAYERS_FILE, CHECKPOINT_FILE, CHECKPOINT_META_FILE)

# Settings that change how fast a run goes or how it logs, never its results: they may differ on resume.
RESULT_NEUTRAL = {
    ("device",), ("eval_batch_size",), ("data", "num_workers"), ("log_every",), ("compile",), ("grad_checkpointing",),
    ("checkpoint_every",),
}  # fmt: skip


class RunError(ClipfitError, RuntimeError):
    """A run directory is in a state that would lose data or mix two runs."""


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


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (blank lines skipped); a broken line names the file and line."""
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise RunError(f"{path}:{number} is not a JSON line: {exc}") from None
    return records


class JsonlLog:
    """An append-only JSON-lines log of a run (metrics.jsonl, layers.jsonl); ``None`` path: writes nothing."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self.path is None or not rows:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)

    def truncate_after(self, step: int) -> None:
        """Remove records written after ``step`` (by an epoch that crashed before its checkpoint)."""
        if self.path is None or not self.path.exists():
            return
        keep = [json.dumps(r) for r in read_jsonl(self.path) if r["step"] <= step]
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


def _flatten(d: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out


class RunDir:
    """One run's folder. Only the main process of a distributed job writes (``writable=False`` elsewhere)."""

    def __init__(self, path: str | Path, writable: bool = True) -> None:
        self.path = Path(path).expanduser()
        self.writable = writable

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
        # Settings added in later versions take their defaults, and old records are resolved by today's
        # rules, so neither counts as "changed".
        a = _flatten(resolve(old).to_dict()) if old is not None else {}
        b = _flatten(cfg.to_dict())
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
                raise RunError(
                    f"{self.path} already holds a {state} run with other settings ({'; '.join(diff)}). "
                    "Use another --out, or --overwrite to replace it."
                )

    def clear(self) -> None:
        """Delete the run's files (``--overwrite``), nothing else in the folder."""
        for name in RUN_FILES:
            self.file(name).unlink(missing_ok=True)

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
            atomic_write_text(self.file(RESULTS_FILE), json.dumps(results, indent=2) + "\n")

    # ------------------------------------------------------------------ logs

    def log(self, name: str) -> JsonlLog:
        """metrics.jsonl or layers.jsonl as an append-only log (writes nothing unless writable)."""
        return JsonlLog(self.file(name) if self.writable else None)

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
        handler = logging.FileHandler(self.file(LOG_FILE), encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.DEBUG)
        logging.getLogger("clipfit").addHandler(handler)
        try:
            yield
        finally:
            logging.getLogger("clipfit").removeHandler(handler)
            handler.close()

    # ------------------------------------------------------------------ checkpoint

    def checkpoint(self) -> Checkpoint:
        return read_checkpoint(self.file(CHECKPOINT_FILE))

    def save_checkpoint(self, init, final, meta, optim=None, rng=None) -> None:
        """Write checkpoint.safetensors and its checkpoint.json mirror (atomically; main process only)."""
        if self.writable:
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
