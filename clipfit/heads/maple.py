"""MaPLe (Khattak et al., CVPR 2023): coupled prompts in the first J blocks of both towers.

Text: ``n`` context vectors replace the first ``n`` tokens of "a photo of a <class>." (initialised
from those words), and blocks 1..J-1 of the text transformer get their own learnable ``n`` prompt
tokens at those positions (in place of what the previous block made of them). Image: the same
context, mapped by a linear coupling function ``proj`` (text width -> image width), is appended to
the image tokens before the first block, and blocks 1..J-1 get the deep text prompts of the same
block mapped by their own coupling functions. Only the prompts and the coupling functions train.
The published settings are the recipe's defaults (J = 9, n = 2, lr 0.0035, 5 epochs, batch 4).

The tokens are put in through :func:`clipfit.towers.deep_prompts` and
:func:`clipfit.towers.appended_image_tokens` (hooks on open_clip's blocks), not by a copy of
open_clip's forward. A model with fewer than J blocks in a tower gets prompts in all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from clipfit.heads.base import ClipHead, HeadOptionError, option
from clipfit.prompts import clean_classname, tokenize

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)


@dataclass
class MaPLeHead(ClipHead):
    kind: ClassVar[str] = "maple"
    prompts_image: ClassVar[bool] = True  # the coupled prompts go into the image tower too
    _PLACEHOLDER: ClassVar[str] = "X"
    legacy_names: ClassVar[Mapping[str, str]] = {}

    maple_ctx: int = option(2, "maple: prompt tokens per block (default 2)", int)
    maple_depth: int = option(9, "maple: blocks of each tower that get prompts, J (default 9)", int)
    maple_init: str | None = option(
        "a photo of a", 'maple: phrase the first tokens start from (default "a photo of a")'
    )

    def validate(self) -> None:
        if self.maple_ctx < 1 or self.maple_depth < 1:
            raise HeadOptionError(
                f"MaPLe needs at least one prompt token and one block; got {self.maple_ctx}, {self.maple_depth}"
            )
        if self.maple_init is not None:
            self.maple_init = self.maple_init.strip() or None

    def attach(self, model: nn.Module, tokenizer: Callable, classnames: Sequence[str] | None = None) -> None:
        import torch

        from clipfit.heads.parts import MaPLePrompts
        from clipfit.towers import embed_tokens, supports_cut, tower_depth, tower_width

        if not supports_cut(model):
            raise HeadOptionError("MaPLe needs an open_clip transformer text tower with a causal mask")
        depth = min(self.maple_depth, tower_depth(model, "text"), tower_depth(model, "image"))
        if depth < self.maple_depth:
            logger.info("MaPLe: the model has %d blocks per tower; prompts go into all of them (J = %d)", depth, depth)
            self.maple_depth = depth
        device = next(model.parameters()).device
        width = tower_width(model, "text")
        if self.maple_init:
            tokens = tokenizer([self.maple_init])[0].to(device)
            words = int((tokens != 0).sum()) - 2  # drop [SOS] and [EOS]
            if words < self.maple_ctx:
                raise HeadOptionError(
                    f"MaPLe's {self.maple_ctx} prompt tokens start from the first words of {self.maple_init!r}, "
                    f"which has {words}"
                )
            with torch.no_grad():
                ctx = embed_tokens(model, tokens[1 : 1 + self.maple_ctx]).detach().clone().float()
        else:
            ctx = torch.empty(self.maple_ctx, width, device=device).normal_(std=0.02)
        model.prompt = MaPLePrompts(ctx, tower_width(model, "image"), self.maple_depth).to(device)

    def class_inputs(
        self, tokenizer: Callable, model: nn.Module, template: str, classnames: Sequence[str]
    ) -> torch.Tensor:
        from clipfit.towers import cut_tokens

        prefix = self.maple_init or " ".join([self._PLACEHOLDER] * self.maple_ctx)
        prompts = [f"{prefix} {clean_classname(c)}." for c in classnames]
        return cut_tokens(tokenize(tokenizer, prompts, "MaPLe prompt", "use shorter class names"))

    def encode_classes(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        import torch

        from clipfit.towers import deep_prompts, embed_tokens, encode_text

        embeddings = embed_tokens(model, inputs)
        ctx = model.prompt.ctx.to(embeddings.dtype).unsqueeze(0).expand(len(inputs), -1, -1)
        embeddings = torch.cat([embeddings[:, :1], ctx, embeddings[:, 1 + self.maple_ctx :]], dim=1)
        with deep_prompts(model, "text", model.prompt.text_prompts(), at="after_first"):
            return encode_text(model, inputs, token_embeddings=embeddings)

    def encode_images(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        with self.image_prompts(model):
            return model.encode_image(images)

    @contextmanager
    def image_prompts(self, model: nn.Module) -> Iterator[None]:
        """The image tower with MaPLe's coupled prompts in place (also for analyses that hook its blocks)."""
        from clipfit.towers import appended_image_tokens, deep_prompts

        with ExitStack() as stack:
            stack.enter_context(appended_image_tokens(model, model.prompt.proj(model.prompt.ctx)))
            stack.enter_context(deep_prompts(model, "image", model.prompt.image_prompts(), at="last"))
            yield
