"""Checkpoints that describe themselves: trained tensors in safetensors, metadata in JSON.

``checkpoint.safetensors`` holds only the trained tensors, as ``init/<name>`` (the pretrained
values) and ``final/<name>`` (the values after the last finished epoch); a ViT-B/16 ClipFit
checkpoint is about 0.4 MB. While a run is unfinished it also holds what resuming needs:
``optim/<name>/<key>`` optimizer buffers and ``rng/*`` generator states. The metadata (model,
pretrained source, recipe, class names, template, epoch, versions) is stored in the safetensors
header, which is authoritative, and mirrored in ``checkpoint.json`` for people.

Both files are written to a temporary name and renamed, so a crash never leaves a torn file.
Nothing here unpickles.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from clipfit.errors import ClipfitError
from clipfit.files import atomic_write_bytes, atomic_write_text

FORMAT = "clipfit-checkpoint/1"


class CheckpointError(ClipfitError, RuntimeError):
    """A checkpoint is missing, not a clipfit checkpoint, or does not fit the model."""


@dataclass
class Checkpoint:
    init: dict[str, torch.Tensor]  # pretrained values of the trained tensors
    final: dict[str, torch.Tensor]  # values after the last finished epoch
    meta: dict[str, Any]  # model, pretrained, recipe, classnames, template, epoch, complete, ...
    optim: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # name -> optimizer buffers
    rng: dict[str, Any] = field(default_factory=dict)  # generator states of an unfinished run

    @property
    def names(self) -> list[str]:
        """Trained tensor names in model order."""
        return list(self.meta.get("trained", self.final))


def rng_state() -> dict[str, Any]:
    """Every global generator's state (torch CPU/CUDA as tensors, Python and NumPy as JSON)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": json.dumps(random.getstate()),
        "numpy": json.dumps([np_state[0], np_state[1].tolist(), *np_state[2:]]),
    }
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda{i}"] = s
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "python" in state:
        version, internal, gauss = json.loads(state["python"])
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = json.loads(state["numpy"])
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if torch.cuda.is_available():
        cuda = [state[f"cuda{i}"] for i in range(torch.cuda.device_count()) if f"cuda{i}" in state]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)


def write_checkpoint(
    path: str | Path,
    init: dict[str, torch.Tensor],
    final: dict[str, torch.Tensor],
    meta: dict[str, Any],
    optim: dict[str, dict[str, torch.Tensor]] | None = None,
    rng: dict[str, Any] | None = None,
    mirror: Path | None = None,
) -> Path:
    """Write the checkpoint to ``path`` (and its metadata as JSON to ``mirror``) atomically; returns ``path``."""
    path = Path(path)
    meta = {"format": FORMAT, **meta, "trained": list(final)}
    tensors = {f"init/{n}": t.detach().cpu().contiguous() for n, t in init.items()}
    tensors.update({f"final/{n}": t.detach().cpu().contiguous() for n, t in final.items()})
    header = {"clipfit": json.dumps(meta)}
    for name, buffers in (optim or {}).items():
        for key, value in buffers.items():
            tensors[f"optim/{name}/{key}"] = value.detach().cpu().contiguous()
    for key, value in (rng or {}).items():
        if isinstance(value, torch.Tensor):
            tensors[f"rng/{key}"] = value.cpu().contiguous()
        else:
            header[f"rng/{key}"] = value
    atomic_write_bytes(path, lambda tmp: save_file(tensors, tmp, metadata=header))
    if mirror is not None:
        atomic_write_text(mirror, json.dumps(meta, indent=2) + "\n")
    return path


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a clipfit checkpoint file (``checkpoint.safetensors``)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f"no clipfit checkpoint at {file}")
    try:
        with safe_open(str(file), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{file} is not a clipfit checkpoint (expected a safetensors file written by clipfit-train): {exc}"
        ) from exc
    if "clipfit" not in header:
        raise CheckpointError(f"{file} is a safetensors file but not a clipfit checkpoint (no clipfit metadata)")
    meta = json.loads(header["clipfit"])
    ckpt = Checkpoint(init={}, final={}, meta=meta)
    for key, value in tensors.items():
        kind, _, rest = key.partition("/")
        if kind in ("init", "final"):
            getattr(ckpt, kind)[rest] = value
        elif kind == "optim":
            name, _, buffer = rest.rpartition("/")
            ckpt.optim.setdefault(name, {})[buffer] = value
        elif kind == "rng":
            ckpt.rng[rest] = value
    ckpt.rng.update({k[len("rng/") :]: v for k, v in header.items() if k.startswith("rng/")})
    # safetensors stores keys sorted; restore the model order recorded in the metadata.
    order = [n for n in meta.get("trained", []) if n in ckpt.final] or sorted(ckpt.final)
    ckpt.init = {n: ckpt.init[n] for n in order if n in ckpt.init}
    ckpt.final = {n: ckpt.final[n] for n in order}
    return ckpt


def check_compatible(model: nn.Module, ckpt: Checkpoint, model_name: str | None = None) -> None:
    """Raise if the checkpoint's tensors do not fit ``model``, naming the mismatch."""
    trained_on = f"{ckpt.meta.get('model')} (pretrained {ckpt.meta.get('pretrained')})"
    if model_name is not None and ckpt.meta.get("model") not in (None, model_name):
        raise CheckpointError(
            f"the checkpoint was trained on {trained_on}, but the model is {model_name}; "
            f"pass --model {ckpt.meta.get('model')} (or the run directory, which records it)"
        )
    params = dict(model.named_parameters())
    label = f"the model {model_name}" if model_name else "the model"
    for name in ckpt.names:
        value = ckpt.final[name]
        if name not in params:
            raise CheckpointError(
                f"the checkpoint (trained on {trained_on}) holds '{name}', which {label} "
                "does not have: another architecture?"
            )
        if tuple(params[name].shape) != tuple(value.shape):
            raise CheckpointError(
                f"the checkpoint (trained on {trained_on}) does not fit {label}: "
                f"'{name}' is {tuple(value.shape)} in the checkpoint and {tuple(params[name].shape)} in the model"
            )


@torch.no_grad()
def apply_checkpoint(model: nn.Module, ckpt: Checkpoint, which: str = "final", model_name: str | None = None) -> None:
    """Copy the checkpoint's ``init`` or ``final`` tensors into the model, after checking they fit."""
    check_compatible(model, ckpt, model_name)
    params = dict(model.named_parameters())
    for name, value in getattr(ckpt, which).items():
        params[name].copy_(value.to(params[name].device, params[name].dtype))


@contextmanager
def checkpoint_values(
    model: nn.Module, ckpt: Checkpoint, which: str = "init", model_name: str | None = None
) -> Iterator[None]:
    """The checkpoint's ``which`` tensors in the model while the body runs, the previous values after.

    What evaluating or analysing "at the pretrained values" needs: ``with checkpoint_values(model,
    ckpt, "init"): zero_shot = ...``; the fine-tuned values come back even when the body raises.
    """
    params = dict(model.named_parameters())
    saved = {name: params[name].detach().clone() for name in getattr(ckpt, which) if name in params}
    apply_checkpoint(model, ckpt, which, model_name)
    try:
        yield
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)
