"""The modules heads attach to an open_clip model: the tensors the baseline recipes train.

Each is registered on the model under a fixed name (``prompt``, ``adapter``, ``probe``), so it is
named, trained, checkpointed and analysed like any other tensor, and a recipe selects it by type
(:mod:`clipfit.recipes`). They live apart from the heads' option records so that the records (and
``clipfit-train --help``, which lists their options) load without torch.
"""

from __future__ import annotations

import torch
from torch import nn


class PromptContext(nn.Module):
    """CoOp's learnable context vectors (registered on the model as ``prompt``)."""

    def __init__(self, ctx: torch.Tensor) -> None:
        super().__init__()
        self.ctx = nn.Parameter(ctx)


class CoCoOpPrompts(PromptContext):
    """CoCoOp's context vectors and meta-network (registered on the model as ``prompt``)."""

    def __init__(self, ctx: torch.Tensor, image_dim: int, reduction: int = 16) -> None:
        super().__init__(ctx)
        width = ctx.shape[1]
        self.meta_net = nn.Sequential(
            nn.Linear(image_dim, image_dim // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(image_dim // reduction, width),
        ).to(ctx.device)


class MaPLePrompts(nn.Module):
    """MaPLe's prompts and coupling functions (registered on the model as ``prompt``).

    ``deep_text["i"]`` and ``deep_proj["i"]`` belong to block ``i`` (1..J-1) of the towers, so their
    parameter names say which block they reach (``prompt.deep_text.3`` is block 3's).
    """

    def __init__(self, ctx: torch.Tensor, image_width: int, depth: int) -> None:
        super().__init__()
        n, width = ctx.shape
        self.ctx = nn.Parameter(ctx)
        self.proj = nn.Linear(width, image_width)
        self.deep_text = nn.ParameterDict(
            {str(i): nn.Parameter(torch.empty(n, width).normal_(std=0.02)) for i in range(1, depth)}
        )
        self.deep_proj = nn.ModuleDict({str(i): nn.Linear(width, image_width) for i in range(1, depth)})

    def text_prompts(self) -> dict[int, torch.Tensor]:
        return {int(i): p for i, p in self.deep_text.items()}

    def image_prompts(self) -> dict[int, torch.Tensor]:
        return {int(i): self.deep_proj[i](p) for i, p in self.deep_text.items()}


class Adapter(nn.Module):
    """CLIP-Adapter's bottleneck ``ReLU(f W1) W2`` (registered on the model as ``adapter``).

    The paper's formula; the official code adds a second ReLU after W2, which would leave a
    zero-initialised W2 without gradient. W2 starts at zero so the residual is 0 at initialisation.
    """

    def __init__(self, dim: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(dim, dim // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(dim // reduction, dim, bias=False),
        )
        nn.init.zeros_(self.fc[2].weight)  # residual 0 at initialisation: training starts from zero-shot

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class LinearProbe(nn.Module):
    """The linear probe's weights, registered on the model as ``probe`` (zeros until fit)."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_classes, dim))
        self.bias = nn.Parameter(torch.zeros(n_classes))
