"""Checkpoints of the original CLIPFit code (Dassl format), read without a plain unpickle.

The released code (CoOp/Dassl) saves ``<output>/prompt_learner/model.pth.tar-<epoch>`` with
``torch.save`` of a dict ``{"state_dict", "epoch", "optimizer", "scheduler", "val_result"}``.
``state_dict`` is the prompt learner's: ``image_encoder.*`` (CLIP's visual tower) and
``text_encoder.*`` (transformer, positional_embedding, ln_final, text_projection). In the default
fp16 mode the Linear/attention weights and biases, among them the trained text FFN biases, are
half precision; LayerNorms stay fp32. ``scheduler`` is the state of Dassl's
ConstantWarmupScheduler, whose ``successor`` is a pickled CosineAnnealingLR object holding the
SGD optimizer, so ``torch.load(weights_only=True)`` refuses these files and a plain ``torch.load``
would run whatever classes the file names.

:func:`clipfit.archives.read_torch_zip` never does either: it reads the archive's tensors
itself and unpickles with an allowlist, every other class the file names becoming an inert stub
that runs no code (see :mod:`clipfit.archives`). Only ``state_dict`` is used; the optimizer and
scheduler come back as stubs and are ignored.

Names map to open_clip's: ``image_encoder.X`` -> ``visual.X``, ``text_encoder.X`` -> ``X``
(OpenAI CLIP and open_clip name the towers' parameters alike).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from clipfit.archives import read_torch_zip
from clipfit.checkpoint import CheckpointError
from clipfit.rundir import CHECKPOINT_FILE

__all__ = ["DasslCheckpoint", "find_checkpoint_file", "looks_like_dassl", "read_dassl_checkpoint", "read_torch_zip"]

_CHECKPOINT_NAME = re.compile(r"^model\.pth\.tar-(\d+)$")


def find_checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file of a Dassl output: the file itself, ``<dir>/model.pth.tar-<N>`` with the
    largest N (or ``model-best.pth.tar``), also one level down in ``prompt_learner/``."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    for folder in (path / "prompt_learner", path):
        if not folder.is_dir():
            continue
        epochs = sorted(
            (int(m.group(1)), f) for f in folder.iterdir() if (m := _CHECKPOINT_NAME.match(f.name)) and f.is_file()
        )
        if epochs:
            return epochs[-1][1]
        if (folder / "model-best.pth.tar").is_file():
            return folder / "model-best.pth.tar"
    raise CheckpointError(
        f"no checkpoint at {path}: expected a clipfit-train run directory, a checkpoint.safetensors file, "
        "or an original CLIPFit output (prompt_learner/model.pth.tar-<epoch>)"
    )


def looks_like_dassl(path: str | Path) -> bool:
    """Whether ``path`` is (or holds) a torch.save zip archive rather than a clipfit checkpoint."""
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / CHECKPOINT_FILE).exists():
            return False
        try:
            path = find_checkpoint_file(path)
        except CheckpointError:
            return False
    return path.is_file() and zipfile.is_zipfile(path)


def open_clip_name(key: str) -> str | None:
    """``image_encoder.X`` -> ``visual.X``, ``text_encoder.X`` -> ``X``; None for other keys."""
    for prefix in ("module.", "prompt_learner."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    if key.startswith("image_encoder."):
        return "visual." + key[len("image_encoder.") :]
    if key.startswith("text_encoder."):
        return key[len("text_encoder.") :]
    return None


@dataclass
class DasslCheckpoint:
    """The usable part of an original CLIPFit checkpoint."""

    path: Path
    tensors: dict[str, torch.Tensor]  # open_clip names -> stored values (fp16 or fp32, as saved)
    epoch: int | None
    stubbed: set[str]  # classes and functions of the file that were not trusted (the scheduler's, ...)


def read_dassl_checkpoint(path: str | Path) -> DasslCheckpoint:
    """Read the ``state_dict`` of an original CLIPFit checkpoint under open_clip names.

    Raises:
        CheckpointError: not a torch checkpoint, no ``state_dict``, or no image/text encoder tensors.
    """
    file = find_checkpoint_file(path)
    obj, stubbed = read_torch_zip(file)
    state = obj.get("state_dict") if isinstance(obj, Mapping) else None
    if state is None and isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj  # a bare state dict saved on its own
    if not isinstance(state, Mapping):
        keys = f" with keys {', '.join(map(str, list(obj)[:6]))}" if isinstance(obj, Mapping) else ""
        raise CheckpointError(
            f"{file} is a PyTorch file but not a CLIPFit (Dassl) checkpoint: no 'state_dict' "
            f"(it holds a {type(obj).__name__}{keys})"
        )
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = open_clip_name(str(key))
        if name is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{file}: state_dict entry {key} is not a tensor ({value!r})")
        tensors[name] = value
    if not tensors:
        raise CheckpointError(
            f"{file} has a state_dict but no image_encoder.* / text_encoder.* tensors: "
            "not a checkpoint of the original CLIPFit code"
        )
    epoch = obj.get("epoch") if isinstance(obj, Mapping) else None
    return DasslCheckpoint(file, tensors, epoch if isinstance(epoch, int) else None, stubbed)
