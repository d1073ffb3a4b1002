"""How a recipe turns images and class names into features.

Most recipes change tensors *inside* CLIP and use it as is (:class:`ClipHead`). Two baselines of
the paper's Figure 1 add parameters, attached to the open_clip model as sub-modules so they are
named, trained, checkpointed and analysed like any other tensor:

* :class:`CoOpHead` (prompt tuning, Zhou et al. 2022): ``n_ctx`` learnable context vectors shared
  by all classes replace the template; the prompt is ``[SOS] ctx_1 .. ctx_n <class name>. [EOS]``
  (class token at the end). Initialised randomly (std 0.02, CoOp's default of 16 vectors) or
  from the embeddings of a phrase such as "a photo of a" (then ``n_ctx`` is its token count, and
  at initialisation the logits equal zero-shot CLIP's with the template "a photo of a {}.").
* :class:`AdapterHead` (CLIP-Adapter, Gao et al. 2021): a bottleneck MLP ``ReLU(f W1) W2`` on the
  image features with a residual mix ``ratio * adapter(f) + (1 - ratio) * f`` (ratio 0.2,
  reduction 4). W2 starts at zero, so training starts exactly from zero-shot CLIP (the original
  initialises it randomly; a zero residual makes the baseline's starting point comparable).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from clipfit.config import HeadConfig
from clipfit.prompts import class_tokens, clean_classname
from clipfit.text import cut_tokens, encode_text, supports_cut, text_module


class ClipHead:
    """Plain CLIP: the model's own image encoder and the dataset's template."""

    kind = "clip"

    def attach(self, model: nn.Module, tokenizer: Callable) -> None:
        """Add this head's modules to ``model`` (none for plain CLIP)."""

    def class_inputs(
        self, tokenizer: Callable, model: nn.Module, template: str, classnames: Sequence[str]
    ) -> torch.Tensor:
        """What :meth:`encode_classes` takes for a label space: token ids of the class prompts."""
        return class_tokens(tokenizer, model, template, classnames)

    def encode_classes(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return encode_text(model, inputs)

    def encode_images(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model.encode_image(images)

    def describe(self) -> dict:
        return {"kind": self.kind}


class PromptContext(nn.Module):
    """CoOp's learnable context vectors (registered on the model as ``prompt``)."""

    def __init__(self, ctx: torch.Tensor) -> None:
        super().__init__()
        self.ctx = nn.Parameter(ctx)


class CoOpHead(ClipHead):
    kind = "coop"
    _PLACEHOLDER = "X"  # one BPE token per context vector, as in CoOp

    def __init__(self, n_ctx: int = 16, init: str | None = None) -> None:
        self.init = init.strip() if init else None
        self.n_ctx = n_ctx

    def attach(self, model: nn.Module, tokenizer: Callable) -> None:
        module = text_module(model)
        if module is None or not supports_cut(model):
            raise ValueError("CoOp needs an open_clip transformer text tower with a causal mask")
        width = module.token_embedding.weight.shape[1]
        device = module.token_embedding.weight.device
        if self.init:
            tokens = tokenizer([self.init])[0].to(device)
            n = int((tokens != 0).sum()) - 2  # drop [SOS] and [EOS]
            with torch.no_grad():
                ctx = module.token_embedding(tokens[1 : 1 + n]).detach().clone().float()
            self.n_ctx = n
        else:
            ctx = torch.empty(self.n_ctx, width, device=device).normal_(std=0.02)
        model.prompt = PromptContext(ctx)

    def class_inputs(
        self, tokenizer: Callable, model: nn.Module, template: str, classnames: Sequence[str]
    ) -> torch.Tensor:
        prefix = " ".join([self._PLACEHOLDER] * self.n_ctx)
        tokens = tokenizer([f"{prefix} {clean_classname(c)}." for c in classnames])
        return cut_tokens(tokens)

    def encode_classes(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        module = text_module(model)
        embeddings = module.token_embedding(inputs)
        ctx = model.prompt.ctx.to(embeddings.dtype).unsqueeze(0).expand(len(inputs), -1, -1)
        embeddings = torch.cat([embeddings[:, :1], ctx, embeddings[:, 1 + self.n_ctx :]], dim=1)
        return encode_text(model, inputs, token_embeddings=embeddings)

    def describe(self) -> dict:
        return {"kind": self.kind, "n_ctx": self.n_ctx, "init": self.init}


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


class AdapterHead(ClipHead):
    kind = "adapter"

    def __init__(self, ratio: float = 0.2, reduction: int = 4) -> None:
        self.ratio, self.reduction = ratio, reduction

    def attach(self, model: nn.Module, tokenizer: Callable) -> None:
        dim = int(model.visual.output_dim)
        model.adapter = Adapter(dim, self.reduction).to(next(model.parameters()).device)

    def encode_images(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        features = model.encode_image(images)
        return self.ratio * model.adapter(features) + (1 - self.ratio) * features

    def describe(self) -> dict:
        return {"kind": self.kind, "ratio": self.ratio, "reduction": self.reduction}


def make_head(kind: str, cfg: HeadConfig | None = None) -> ClipHead:
    """The head of a recipe kind: ``clip``, ``coop`` or ``adapter``."""
    cfg = cfg or HeadConfig()
    if kind == "coop":
        return CoOpHead(cfg.coop_n_ctx, cfg.coop_init)
    if kind == "adapter":
        return AdapterHead(cfg.adapter_ratio, cfg.adapter_reduction)
    if kind == "clip":
        return ClipHead()
    raise ValueError(f"unknown head '{kind}'")


def head_from_meta(meta: dict) -> ClipHead:
    """Rebuild the head recorded in a checkpoint's metadata (``describe()``'s output)."""
    info = meta or {"kind": "clip"}
    if info.get("kind") == "coop":
        return CoOpHead(info.get("n_ctx", 16), info.get("init"))
    if info.get("kind") == "adapter":
        return AdapterHead(info.get("ratio", 0.2), info.get("reduction", 4))
    return ClipHead()


class LinearProbe(nn.Module):
    """The linear probe's weights, registered on the model as ``probe`` (zeros until fit)."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_classes, dim))
        self.bias = nn.Parameter(torch.zeros(n_classes))


def attach_probe(model: nn.Module, n_classes: int) -> None:
    """Give ``model`` a zero linear probe over its image-feature dimension (clipfit.linear_probe fits it)."""
    device = next(model.parameters()).device
    model.probe = LinearProbe(int(model.visual.output_dim), n_classes).to(device)
