"""Device resolution: what this machine lacks is refused with a ConfigError the CLI prints."""

from __future__ import annotations

import pytest
import torch

from clipfit.errors import ConfigError
from clipfit.runtime import resolve_device


def test_auto_and_cpu_resolve(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")


def test_cuda_without_cuda_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"CUDA is not available.*--device cpu"):
        resolve_device("cuda:0")


def test_missing_gpu_index_names_the_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="has 2 GPU"):
        resolve_device("cuda:2")


def test_unknown_device_lists_the_accepted_forms():
    with pytest.raises(ConfigError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")


def test_an_explicit_gpu_index_under_torchrun_is_refused(monkeypatch):
    # every process would land on the same GPU; torchrun's processes take cuda:LOCAL_RANK
    from clipfit.runtime import init_distributed

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match="would put every process on one GPU"):
        init_distributed("cuda:1")
