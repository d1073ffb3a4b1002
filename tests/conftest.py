"""Hermetic test setup: no network, tiny models through open_clip's real factory."""

from __future__ import annotations

import os

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
def vit_b16_names() -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of open_clip's ViT-B-16 (random init, built once)."""
    model = build_model("ViT-B-16", "none").model
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


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
