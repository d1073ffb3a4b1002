"""CoCoOp (Zhou et al., CVPR 2022): CoOp's context plus a meta-network that makes it per image.

A meta-net ``Linear(d, d/16) - ReLU - Linear(d/16, width)`` maps each (L2-normalised) image feature
to a token ``pi(x)`` added to every context vector, so the prompt, and every class's text feature,
depends on the image: ``t_c(x) = text([SOS] ctx_1+pi(x) .. ctx_n+pi(x) <class>. [EOS])``. The
published settings are the recipe's defaults (4 context vectors from "a photo of a", batch 1, 10
epochs, lr 0.002; the original trains in fp16). The per-image text pass runs all classes of a
batch of images as one batched text forward over B x C sequences cut to the longest prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from clipfit.heads.coop import CoOpHead

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class CoCoOpHead(CoOpHead):
    kind: ClassVar[str] = "cocoop"
    per_image: ClassVar[bool] = True  # class features depend on the image: encode_classes_per_image
    legacy_names: ClassVar[Mapping[str, str]] = {}

    def attach(self, model: nn.Module, tokenizer: Callable, classnames: Sequence[str] | None = None) -> None:
        from clipfit.heads.parts import CoCoOpPrompts
        from clipfit.towers import image_feature_dim

        super().attach(model, tokenizer, classnames)
        ctx = model.prompt.ctx.detach()
        model.prompt = CoCoOpPrompts(ctx, image_feature_dim(model))

    def encode_classes_per_image(
        self, model: nn.Module, inputs: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor:
        """(B, C, D) class features for the B (normalised) image features: one batched text forward."""
        import torch

        from clipfit.towers import embed_tokens, encode_text

        bias = model.prompt.meta_net(image_features.to(model.prompt.ctx.dtype))  # (B, width)
        ctx = model.prompt.ctx.unsqueeze(0) + bias.unsqueeze(1)  # (B, n, width)
        batch, classes = len(image_features), len(inputs)
        embeddings = embed_tokens(model, inputs)  # (C, L, width)
        ctx = ctx.to(embeddings.dtype).unsqueeze(1).expand(-1, classes, -1, -1)  # (B, C, n, width)
        rows = embeddings.unsqueeze(0).expand(batch, -1, -1, -1)
        prompts = torch.cat([rows[:, :, :1], ctx, rows[:, :, 1 + self.coop_ctx :]], dim=2)
        tokens = inputs.unsqueeze(0).expand(batch, -1, -1).reshape(batch * classes, -1)
        features = encode_text(model, tokens, token_embeddings=prompts.reshape(batch * classes, *prompts.shape[2:]))
        return features.reshape(batch, classes, -1)

    def encode_classes(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """The class features of the context alone (no image: the meta-net's token left out)."""
        return super().encode_classes(model, inputs)
