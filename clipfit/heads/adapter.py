"""CLIP-Adapter (Gao et al., IJCV 2024): a residual bottleneck MLP on the image features.

``ratio * adapter(f) + (1 - ratio) * f`` with ``adapter(f) = ReLU(f W1) W2`` (ratio 0.2, reduction
4). W2 starts at zero, so training starts exactly from zero-shot CLIP (the original initialises it
randomly; a zero residual makes the baseline's starting point comparable).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from clipfit.heads.base import ClipHead, HeadOptionError, option

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class AdapterHead(ClipHead):
    kind: ClassVar[str] = "adapter"
    legacy_names: ClassVar[Mapping[str, str]] = {"ratio": "adapter_ratio", "reduction": "adapter_reduction"}

    adapter_ratio: float = option(0.2, "clip-adapter: residual ratio (default 0.2)", float)
    adapter_reduction: int = option(4, "clip-adapter: bottleneck reduction (default 4)", int)

    def validate(self) -> None:
        if self.adapter_reduction < 1 or not 0 <= self.adapter_ratio <= 1:
            raise HeadOptionError(
                "CLIP-Adapter needs a reduction >= 1 and a ratio in [0, 1]; got "
                f"{self.adapter_reduction}, {self.adapter_ratio}"
            )

    def attach(self, model: nn.Module, tokenizer: Callable, classnames: Sequence[str] | None = None) -> None:
        from clipfit.heads.parts import Adapter
        from clipfit.towers import image_feature_dim

        dim = image_feature_dim(model)
        if dim // self.adapter_reduction < 1:
            raise HeadOptionError(
                f"--adapter-reduction {self.adapter_reduction} leaves no bottleneck of the {dim}-wide image features "
                f"(width {dim} // {self.adapter_reduction} = 0); use at most {dim}"
            )
        model.adapter = Adapter(dim, self.adapter_reduction).to(next(model.parameters()).device)

    def encode_images(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        features = model.encode_image(images)
        return self.adapter_ratio * model.adapter(features) + (1 - self.adapter_ratio) * features
