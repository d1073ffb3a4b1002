"""The learning rate per epoch follows Dassl's constant warm-up + per-epoch cosine exactly."""

from __future__ import annotations

import math

import pytest
import torch

from clipfit.config import OptimConfig
from clipfit.engine import lr_at_epoch


def _dassl_lrs(epochs: int, lr: float, warmup_lr: float) -> list[float]:
    """Reference: Dassl's ConstantWarmupScheduler(warmup_epoch=1) around CosineAnnealingLR(T_max=epochs),
    stepped once per epoch, re-enacted with torch's own CosineAnnealingLR."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=float(epochs))
    lrs = []
    for epoch in range(epochs):
        lrs.append(warmup_lr if epoch < 1 else optimizer.param_groups[0]["lr"])
        if epoch >= 1:  # the warm-up wrapper steps its successor only after the warm-up epoch
            optimizer.step()
            successor.step()
    return lrs


@pytest.mark.parametrize("epochs", [10, 100])
def test_matches_dassl_schedule(epochs):
    cfg = OptimConfig(lr=0.002, epochs=epochs)
    ours = [lr_at_epoch(e, cfg) for e in range(epochs)]
    for a, b in zip(ours, _dassl_lrs(epochs, cfg.lr, cfg.warmup_lr), strict=True):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def test_paper_values():
    cfg = OptimConfig(lr=0.002, epochs=10)
    assert lr_at_epoch(0, cfg) == 1e-5  # constant warm-up epoch
    assert lr_at_epoch(1, cfg) == 0.002  # cosine starts at the peak
    assert math.isclose(lr_at_epoch(6, cfg), 0.001 * (1 + math.cos(math.pi * 5 / 10)))
    assert lr_at_epoch(9, cfg) > 0  # Dassl's cosine spans all epochs: the last one is not at zero
