"""The linear probe's classifier as a head: a weight and bias over the image features.

The probe is fit by scikit-learn (:mod:`clipfit.linear_probe`), not by gradients; it is attached
to the model as ``probe`` so it is checkpointed like any trained tensor. It has no text side: it
scores only the classes it was fit on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from clipfit.heads.base import ClipHead, HeadOptionError

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class ProbeHead(ClipHead):
    kind: ClassVar[str] = "probe"

    def attach(self, model: nn.Module, tokenizer: Callable, classnames: Sequence[str] | None = None) -> None:
        if not classnames:
            raise HeadOptionError(
                "the linear probe's classifier is sized by the training classes: it needs the dataset "
                "(pass --dataset, also with --dry-run)"
            )
        from clipfit.heads.parts import LinearProbe
        from clipfit.towers import image_feature_dim

        device = next(model.parameters()).device
        model.probe = LinearProbe(image_feature_dim(model), len(classnames)).to(device)

    def encode_classes(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        raise HeadOptionError("a linear probe has no text side: it scores only the classes it was fit on")
