"""A private Hugging Face hub cache, laid out as huggingface_hub leaves it after a download.

Tests put weights where open_clip's ``download_pretrained`` finds a tag's file with the network off
(HF_HUB_OFFLINE=1): ``models--ORG--NAME/refs/main`` naming a commit, and
``models--ORG--NAME/snapshots/<commit>/open_clip_model.safetensors``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hf_cache_with(cache: Path, repo: str, weights: dict[str, torch.Tensor]) -> Path:
    """Write ``weights`` as ``repo``'s ``open_clip_model.safetensors`` at ``main``; returns the file."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(COMMIT)
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    path = snapshot / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    return path
