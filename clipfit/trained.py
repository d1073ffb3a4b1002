"""A trained model back from its checkpoint: the pretrained model, the recipe's head, the trained tensors.

A checkpoint holds only the trained tensors (``init/`` and ``final/``) and a record of the model,
pretrained source, recipe and head; :func:`build_trained_model` rebuilds the rest from that record,
so ``clipfit-eval``, the analyses and the Python API all load a run the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from clipfit.checkpoint import Checkpoint, apply_checkpoint
from clipfit.heads import ClipHead
from clipfit.models import ModelBundle, build_model, to_half
from clipfit.recipes import apply_recipe, get_recipe
from clipfit.runtime import seeded_init


def recorded_head(meta: Mapping[str, Any]) -> ClipHead:
    """The head a checkpoint records (its recipe's head class with the recorded options)."""
    return get_recipe(meta.get("recipe") or "clipfit").head.from_record(meta.get("head"))


def build_trained_model(
    ckpt: Checkpoint,
    device: torch.device | str = "cpu",
    which: str = "final",
    model: str | None = None,
    pretrained: str | None = None,
) -> ModelBundle:
    """The checkpoint's model with its head and its ``final`` (or ``init``) tensors in place, in eval mode.

    ``model``/``pretrained`` override the recorded ones (e.g. when the pretrained file moved);
    an architecture the checkpoint does not fit is refused with the mismatch named.
    """
    meta = ckpt.meta
    head = recorded_head(meta)
    with seeded_init(meta.get("seed"), device):  # the same random init as the run (--pretrained none)
        quick_gelu = {"quickgelu": True, "gelu": False}.get(meta.get("activation"))  # as the run was built
        bundle = build_model(model or meta["model"], pretrained or meta["pretrained"], device, quick_gelu)
        head.attach(bundle.model, bundle.tokenizer, meta.get("classnames"))
    if meta.get("precision") == "half":  # the released code's numerics, as the run trained
        to_half(bundle.model)
    bundle.head = head
    apply_recipe(bundle.model, meta.get("recipe") or "clipfit")
    apply_checkpoint(bundle.model, ckpt, which, model_name=bundle.name)
    bundle.model.eval()
    return bundle
