"""Hermetic test setup: no network, tiny models through open_clip's real factory.

Shared fixtures (each test's own details stay in its file):

- models: ``tiny`` (a fresh clipfit-tiny), ``tiny_weights`` (a local weights file in the test's
  tmp_path), ``shared_tiny_weights`` (the same bytes, written once per session);
- in-process training: ``shapes_task`` (few-shot TrainTasks of the shapes world) and
  ``make_trainer`` (a CPU Trainer with the suite's optimiser settings);
- command-line training: ``tiny_argv`` and ``train_tiny`` (clipfit-train runs of clipfit-tiny
  on the shapes world, flags as keyword arguments);
- ``clipfit_names``: the tensors the ClipFit recipe selects in a ViT of a given depth;
- the cache: every test gets a fresh ``clipfit_cache``; module and session fixtures that train
  share one session cache, so no run reads or writes the user's cache.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in the suite may reach a model hub
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest
import torch

from clipfit.models import ModelBundle, build_model

torch.set_num_threads(min(2, torch.get_num_threads()))


# ----------------------------------------------------------------------------- cache


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """clipfit's cache directory for module- and session-scoped fixtures (set up before any test's own cache)."""
    path = tmp_path_factory.mktemp("clipfit-cache-session")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPFIT_CACHE", str(path))
        yield path


@pytest.fixture(autouse=True)
def clipfit_cache(tmp_path_factory, monkeypatch):
    """clipfit's cache directory (random splits, few-shot draws of read-only data) in a fresh temporary folder."""
    path = tmp_path_factory.mktemp("clipfit-cache")
    monkeypatch.setenv("CLIPFIT_CACHE", str(path))
    return path


# ----------------------------------------------------------------------------- models


@pytest.fixture
def tiny() -> ModelBundle:
    """A fresh random-init clipfit-tiny (ViT image tower, 2+2 blocks, width 32)."""
    torch.manual_seed(0)
    return build_model("clipfit-tiny", "none")


def _save_tiny_weights(path: Path) -> str:
    """Write the state dict of a clipfit-tiny initialised from seed 1234 to ``path`` (safetensors)."""
    from safetensors.torch import save_file

    torch.manual_seed(1234)
    model = build_model("clipfit-tiny", "none").model
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


@pytest.fixture
def tiny_weights(tmp_path) -> str:
    """A local weights file of a random-init clipfit-tiny: a stand-in for real pretrained weights."""
    return _save_tiny_weights(tmp_path / "tiny-pretrained.safetensors")


@pytest.fixture(scope="session")
def shared_tiny_weights(tmp_path_factory) -> str:
    """The bytes of ``tiny_weights``, written once per session: the weights of ``tiny_argv`` / ``train_tiny`` runs."""
    return _save_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny-pretrained.safetensors")


@pytest.fixture(scope="session")
def clipfit_names() -> Callable[[int, int], set[str]]:
    """``clipfit_names(text_blocks, image_blocks)``: what the ClipFit recipe selects in an open_clip ViT.

    The output-Linear bias of every text feed-forward block, and weight and bias of every image
    LayerNorm (ln_pre, ln_1 and ln_2 of each block, ln_post).
    """

    def names(text_blocks: int, image_blocks: int) -> set[str]:
        text = {f"transformer.resblocks.{i}.mlp.c_proj.bias" for i in range(text_blocks)}
        image_ln = ["visual.ln_pre", "visual.ln_post"] + [
            f"visual.transformer.resblocks.{i}.{ln}" for i in range(image_blocks) for ln in ("ln_1", "ln_2")
        ]
        return text | {f"{m}.{k}" for m in image_ln for k in ("weight", "bias")}

    return names


# ----------------------------------------------------------------------------- training in process


@pytest.fixture(scope="session")
def shapes_task() -> Callable[..., Any]:
    """``shapes_task(classes=8, shots=2)``: a TrainTask of the first ``classes`` shapes-world classes.

    The seed-1 few-shot draw of the target domain's train split, kept to the labels below ``classes``,
    with the dataset's template and crop scale (0.5, 1.0). A new task on every call.
    """
    from clipfit.data.registry import load_dataset
    from clipfit.data.sampling import few_shot_split
    from clipfit.engine import TrainTask

    def task(classes: int = 8, shots: int = 2) -> TrainTask:
        dataset = load_dataset("shapes")
        items, _ = few_shot_split(dataset.train, dataset.val, shots, seed=1)
        items = [s for s in items if s.label < classes]
        return TrainTask(items, dataset.classnames[:classes], dataset.template, dataset.reader, (0.5, 1.0))

    return task


@pytest.fixture(scope="session")
def make_trainer() -> Callable[..., Any]:
    """``make_trainer(bundle, trained, task, *, lr=0.002, reg_weight=8.0, epochs=1, run_dir=None,
    checkpoint_meta=None, **settings)``: a Trainer on the CPU, seed 1, batch 4, no warm-up.

    ``run_dir`` (a path) makes it write a run directory; ``settings`` go to TrainSettings
    (log_every, grad_checkpointing, compile, ...).
    """
    from clipfit.config import OptimConfig
    from clipfit.engine import Trainer, TrainSettings
    from clipfit.rundir import RunDir

    def trainer(
        bundle: ModelBundle,
        trained,
        task,
        *,
        lr: float = 0.002,
        reg_weight: float = 8.0,
        epochs: int = 1,
        run_dir: Path | None = None,
        checkpoint_meta: dict[str, Any] | None = None,
        **settings: Any,
    ) -> Trainer:
        optim = OptimConfig(lr=lr, epochs=epochs, batch_size=4, warmup_epochs=0, reg_weight=reg_weight)
        return Trainer(
            bundle,
            trained,
            task,
            TrainSettings(optim, seed=1, device=torch.device("cpu"), **settings),
            run_dir=RunDir(run_dir) if run_dir is not None else None,
            checkpoint_meta=checkpoint_meta,
        )

    return trainer


# ----------------------------------------------------------------------------- training from the command line

# Flags every tiny command-line run starts from (and --pretrained shared_tiny_weights); a keyword argument of
# tiny_argv overrides one (None drops it).
TINY_RUN_FLAGS: dict[str, Any] = {
    "dataset": "shapes",
    "model": "clipfit-tiny",
    "shots": 2,
    "epochs": 3,
    "max_eval_images": 64,
}


def _flags(flags: dict[str, Any]) -> list[str]:
    argv: list[str] = []
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, list | tuple):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


@pytest.fixture(scope="session")
def tiny_argv(shared_tiny_weights) -> Callable[..., list[str]]:
    """``tiny_argv(run_dir, *extra, **flags)``: clipfit-train's argv of a quick quiet run into ``run_dir``.

    By default ClipFit on clipfit-tiny (``shared_tiny_weights``), 2 shots of the shapes world, 3 epochs,
    test sets capped at 64 images. A keyword flag overrides or adds one (``batch_size=16`` gives
    ``--batch-size 16``, ``True`` the bare flag, a list several values, ``None`` drops a default);
    ``extra`` strings come after them, so they win over a default too.
    """

    def argv(run_dir: Path, *extra: str, **flags: Any) -> list[str]:
        merged = {**TINY_RUN_FLAGS, "pretrained": shared_tiny_weights, **flags}
        return [*_flags(merged), *extra, "--run-dir", str(run_dir), "-q"]

    return argv


@pytest.fixture(scope="session")
def train_tiny(tiny_argv) -> Callable[..., tuple[Path, dict[str, Any]]]:
    """``train_tiny(run_dir, *extra, **flags) -> (run_dir, results)``: train ``tiny_argv``'s run in process.

    Asserts clipfit-train exits with 0 and returns the run directory and its parsed results.json.
    """
    from clipfit.cli import train

    def run(run_dir: Path, *extra: str, **flags: Any) -> tuple[Path, dict[str, Any]]:
        assert train.main(tiny_argv(run_dir, *extra, **flags)) == 0
        return run_dir, json.loads((run_dir / "results.json").read_text())

    return run
