"""CoOp prompt tuning (Zhou et al., IJCV 2022): learnable context vectors shared by all classes.

The prompt is ``[SOS] ctx_1 .. ctx_n <class name>. [EOS]`` (class token at the end) and replaces
the dataset's template. The context is initialised randomly (std 0.02, CoOp's default of 16
vectors) or from the token embeddings of a phrase such as "a photo of a" (then the number of
vectors is its token count, and at initialisation the logits equal zero-shot CLIP's with the
template "a photo of a {}.").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from clipfit.heads.base import ClipHead, HeadOptionError, option
from clipfit.prompts import clean_classname, tokenize

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class CoOpHead(ClipHead):
    kind: ClassVar[str] = "coop"
    legacy_names: ClassVar[Mapping[str, str]] = {"n_ctx": "coop_ctx", "init": "coop_init"}
    _PLACEHOLDER: ClassVar[str] = "X"  # one BPE token per context vector, as in CoOp

    coop_ctx: int = option(
        16,
        "coop, cocoop, kgcoop: randomly initialised context vectors (default 16; refused with an init phrase)",
        int,
    )
    coop_init: str | None = option(
        None,
        'coop, cocoop, kgcoop: initialise the context from a phrase, e.g. "a photo of a" (the default of cocoop and '
        'kgcoop; its token count is the number of vectors); "" for random vectors',
    )

    def validate(self) -> None:
        if self.coop_ctx < 1:
            raise HeadOptionError(f"CoOp needs at least one context vector, got {self.coop_ctx}")
        if self.coop_init is not None:
            self.coop_init = self.coop_init.strip() or None

    def attach(self, model: nn.Module, tokenizer: Callable, classnames: Sequence[str] | None = None) -> None:
        import torch

        from clipfit.heads.parts import PromptContext
        from clipfit.towers import embed_tokens, supports_cut, text_width

        if not supports_cut(model):
            raise HeadOptionError("CoOp needs an open_clip transformer text tower with a causal mask")
        device = next(model.parameters()).device
        if self.coop_init:
            tokens = tokenizer([self.coop_init])[0].to(device)
            n = int((tokens != 0).sum()) - 2  # drop [SOS] and [EOS]
            with torch.no_grad():
                ctx = embed_tokens(model, tokens[1 : 1 + n]).detach().clone().float()
            self.coop_ctx = n
        else:
            ctx = torch.empty(self.coop_ctx, text_width(model), device=device).normal_(std=0.02)
        model.prompt = PromptContext(ctx)

    def class_inputs(
        self, tokenizer: Callable, model: nn.Module, template: str, classnames: Sequence[str]
    ) -> torch.Tensor:
        from clipfit.towers import cut_tokens

        prefix = " ".join([self._PLACEHOLDER] * self.coop_ctx)
        prompts = [f"{prefix} {clean_classname(c)}." for c in classnames]
        remedy = f"use fewer context vectors than --coop-ctx {self.coop_ctx} (or shorter class names)"
        return cut_tokens(tokenize(tokenizer, prompts, "CoOp prompt", remedy))

    def encode_classes(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        import torch

        from clipfit.towers import embed_tokens, encode_text

        embeddings = embed_tokens(model, inputs)
        ctx = model.prompt.ctx.to(embeddings.dtype).unsqueeze(0).expand(len(inputs), -1, -1)
        embeddings = torch.cat([embeddings[:, :1], ctx, embeddings[:, 1 + self.coop_ctx :]], dim=1)
        return encode_text(model, inputs, token_embeddings=embeddings)
