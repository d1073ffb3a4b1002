"""Hermetic test setup: no network, tiny models through open_clip's real factory."""

from __future__ import annotations

import os
from collections.abc import Callable

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in the suite may reach a model hub
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest
import torch

from clipfit.models import ModelBundle, build_model

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny() -> ModelBundle:
    """A fresh random-init clipfit-tiny (ViT image tower, 2+2 blocks, width 32)."""
    torch.manual_seed(0)
    return build_model("clipfit-tiny", "none")


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


@pytest.fixture
def tiny_weights(tmp_path) -> str:
    """A local weights file of a random-init clipfit-tiny: a stand-in for real pretrained weights."""
    from safetensors.torch import save_file

    torch.manual_seed(1234)
    model = build_model("clipfit-tiny", "none").model
    path = tmp_path / "tiny-pretrained.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


@pytest.fixture(autouse=True)
def clipfit_cache(tmp_path_factory, monkeypatch):
    """clipfit's cache directory (random splits, few-shot draws of read-only data) in a fresh temporary folder."""
    path = tmp_path_factory.mktemp("clipfit-cache")
    monkeypatch.setenv("CLIPFIT_CACHE", str(path))
    return path
