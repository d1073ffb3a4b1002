"""Everything clipfit knows about the structure of open_clip's two towers, in one place.

open_clip keeps the text encoder's parts on the model itself for ``open_clip.CLIP``
(``token_embedding``, ``positional_embedding``, ``transformer``, ``ln_final``, ``text_projection``)
and in ``model.text`` for ``CustomTextCLIP``; the image encoder is ``model.visual`` (a
VisionTransformer with ``transformer.resblocks``, or a ResNet, or a timm model). This module owns
that knowledge: the towers' blocks, the structural parameter selectors the recipes are made of
(LayerNorms, biases, feed-forward layers), pooling of hidden states (the class token, the
end-of-text token), the text forward on cut sequences, activation checkpointing and the BatchNorm
policy of training. Supporting a new architecture means teaching this module (and the parameter
naming of :mod:`clipfit.layers`) about it.

The text forward on cut sequences: open_clip's ``encode_text`` always runs the full context (77
tokens for CLIP) because it adds the whole positional embedding and causal mask. With a causal mask
and end-of-text pooling, positions after a prompt's end-of-text token cannot influence its feature,
so cutting every sequence of a class set to the longest prompt gives the same features for a
fraction of the cost (class prompts are typically 8-20 tokens). Towers where that does not hold
(bidirectional attention, last-token pooling, CoCa's class token, Hugging Face towers) fall back to
``model.encode_text`` on full sequences.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer, text_global_pool
from torch import nn

from clipfit.config import GRAD_CHECKPOINTING
from clipfit.errors import ClipfitError, ConfigError

_CUTTABLE_POOLS = ("argmax", "eos", "first")


class TowerError(ClipfitError, ValueError):
    """A model lacks the tower structure an operation needs (the message names the tower and what is missing)."""


# ----------------------------------------------------------------------------- names


def module_names(model: nn.Module) -> dict[int, str]:
    """id(module) -> its dotted name in ``model``."""
    return {id(module): name for name, module in model.named_modules()}


def parameter_names(model: nn.Module, module: nn.Module, leaves: tuple[str, ...] | None = None) -> list[str]:
    """Full names of ``module``'s own parameters (optionally only the given leaf names)."""
    prefix = module_names(model)[id(module)]
    return [
        f"{prefix}.{leaf}" if prefix else leaf
        for leaf, p in module.named_parameters(recurse=False)
        if p is not None and (leaves is None or leaf in leaves)
    ]


# ----------------------------------------------------------------------------- text tower


def text_module(model: nn.Module) -> nn.Module | None:
    """The module holding the text encoder's parts (``token_embedding``, ``transformer``, ...).

    That is the CLIP model itself for ``open_clip.CLIP``, ``model.text`` for ``CustomTextCLIP``
    with an open_clip ``TextTransformer``, and None for other towers (Hugging Face models).
    """
    if hasattr(model, "token_embedding") and hasattr(model, "ln_final") and hasattr(model, "transformer"):
        return model
    text = getattr(model, "text", None)
    if isinstance(text, TextTransformer):
        return text
    return None


def require_text_module(model: nn.Module, what: str) -> nn.Module:
    """:func:`text_module`, or a TowerError saying that ``what`` needs an open_clip text transformer."""
    module = text_module(model)
    if module is None or getattr(getattr(module, "transformer", None), "resblocks", None) is None:
        raise TowerError(
            f"the text tower of {type(model).__name__} is not an open_clip text transformer "
            f"(no transformer.resblocks); {what} needs one"
        )
    return module


def text_pool_type(module: nn.Module) -> str:
    return getattr(module, "text_pool_type", None) or getattr(module, "pool_type", "argmax")


def text_eos_id(module: nn.Module) -> int | None:
    """open_clip keeps it as ``text_eos_id`` on CLIP and ``eos_id`` on a TextTransformer."""
    return getattr(module, "text_eos_id", None) if hasattr(module, "text_eos_id") else getattr(module, "eos_id", None)


def text_blocks(model: nn.Module) -> list[nn.Module]:
    """The residual blocks of the text transformer, in order."""
    return list(require_text_module(model, "clipfit's text rules").transformer.resblocks)


def text_parts(model: nn.Module) -> list[nn.Module]:
    """The modules that make up the text encoder (for enumerating its parameters)."""
    module = text_module(model)
    if module is None:
        text = getattr(model, "text", None)
        if text is None:
            raise TowerError(f"{type(model).__name__} has no text tower")
        return [text]
    if module is not model:
        return [module]
    # open_clip.CLIP keeps the text encoder's parts on the model itself.
    return [model.transformer, model.token_embedding, model.ln_final]


def text_width(model: nn.Module) -> int:
    """Width of the text tower's token embeddings."""
    return int(require_text_module(model, "prompt tuning").token_embedding.weight.shape[1])


def embed_tokens(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The token-embedding lookup of ``tokens`` (what prompt tuning replaces part of)."""
    return require_text_module(model, "prompt tuning").token_embedding(tokens)


def supports_cut(model: nn.Module) -> bool:
    """Whether cutting sequences to the longest prompt leaves the text features unchanged."""
    module = text_module(model)
    if module is None or getattr(module, "attn_mask", None) is None:
        return False
    if getattr(module, "cls_emb", None) is not None or getattr(module, "use_pad_mask", False):
        return False
    return text_pool_type(module) in _CUTTABLE_POOLS


def cut_tokens(tokens: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Drop the trailing columns that are padding in every row (keeps at least one column)."""
    used = (tokens != pad_id).any(dim=0).nonzero()
    length = int(used.max()) + 1 if len(used) else 1
    return tokens[:, :length].contiguous()


def pool_text(model: nn.Module, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """One vector per sequence of batch-first text hidden states: the tower's own pooling (end-of-text token)."""
    module = require_text_module(model, "text pooling")
    return text_global_pool(hidden, tokens, text_pool_type(module), eos_token_id=text_eos_id(module))


def encode_text(
    model: nn.Module,
    tokens: torch.Tensor,
    *,
    token_embeddings: torch.Tensor | None = None,
    normalize: bool = False,
) -> torch.Tensor:
    """Text features for token sequences of any length up to the context length.

    Args:
        model: an open_clip model.
        tokens: (N, L) token ids, typically cut with :func:`cut_tokens`; used for pooling, and for
            the embeddings unless ``token_embeddings`` is given.
        token_embeddings: optional (N, L, width) input embeddings that replace the token embedding
            lookup (prompt tuning puts learnt context vectors here).
        normalize: L2-normalise the features.
    """
    module = text_module(model)
    if module is None or not supports_cut(model):
        if token_embeddings is not None:
            raise TowerError(f"{type(model).__name__}'s text tower does not accept input embeddings")
        return model.encode_text(tokens, normalize=normalize)
    length = tokens.shape[1]
    cast_dtype = module.transformer.get_cast_dtype()
    x = module.token_embedding(tokens) if token_embeddings is None else token_embeddings
    x = x.to(cast_dtype) + module.positional_embedding[:length].to(cast_dtype)
    x = module.transformer(x, attn_mask=module.attn_mask[:length, :length])
    x = module.ln_final(x)
    x = text_global_pool(x, tokens, text_pool_type(module), eos_token_id=text_eos_id(module))
    projection = module.text_projection
    if projection is not None:
        x = projection(x) if isinstance(projection, nn.Linear) else x @ projection
    return F.normalize(x, dim=-1) if normalize else x


# ----------------------------------------------------------------------------- image tower


def image_tower(model: nn.Module) -> nn.Module:
    """The image encoder (``model.visual`` in open_clip)."""
    visual = getattr(model, "visual", None)
    if visual is None:
        raise TowerError(f"{type(model).__name__} has no image tower (`visual`)")
    return visual


def image_feature_dim(model: nn.Module) -> int:
    """Dimension of the image features (what heads on top of the image tower take)."""
    return int(image_tower(model).output_dim)


def image_input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype images must have for the image tower (fp16 for a model in the released code's half precision)."""
    layer = next((m for m in image_tower(model).modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    dtype = layer.weight.dtype if layer is not None else torch.float32
    return dtype if dtype in (torch.float16, torch.bfloat16) else torch.float32


def image_blocks(model: nn.Module) -> list[nn.Module]:
    """The residual blocks of a transformer image tower, in order."""
    visual = image_tower(model)
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is None:
        raise TowerError(
            f"the image tower ({type(visual).__name__}) has no transformer blocks; this needs open_clip's "
            "VisionTransformer"
        )
    return list(blocks)


def _batch_first(transformer: nn.Module, out: torch.Tensor) -> torch.Tensor:
    return out if getattr(transformer, "batch_first", True) else out.transpose(0, 1)


def block_output_pool(model: nn.Module, tower: str):
    """A function that pools one block output of ``tower`` ("image" or "text") to one vector per input.

    Image: the class token (``pool_type`` "tok"; the patch-token mean for "avg"). Text: the tower's
    end-of-text pooling, which needs the token ids: the returned function takes ``(output, tokens)``.
    """
    if tower == "image":
        visual = image_tower(model)
        transformer, pool_type = visual.transformer, getattr(visual, "pool_type", "tok")

        def pool_image(out: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
            out = _batch_first(transformer, out)
            if pool_type == "tok":
                return out[:, 0]
            return out[:, 1:].mean(dim=1) if pool_type == "avg" else out.mean(dim=1)

        return pool_image
    module = require_text_module(model, "text hidden states")

    def pool_text_block(out: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        return pool_text(model, _batch_first(module.transformer, out), tokens)

    return pool_text_block


# ----------------------------------------------------------------------------- prompt tokens inside the towers


def _tower_blocks(model: nn.Module, tower: str) -> list[nn.Module]:
    return text_blocks(model) if tower == "text" else image_blocks(model)


def _tower_transformer(model: nn.Module, tower: str) -> nn.Module:
    return require_text_module(model, "deep prompts").transformer if tower == "text" else image_tower(model).transformer


@contextmanager
def deep_prompts(model: nn.Module, tower: str, prompts: Mapping[int, torch.Tensor], at: str) -> Iterator[None]:
    """While the body runs, block ``i`` of ``tower`` ("text" or "image") gets ``prompts[i]`` (n, width; the
    same for every sequence of the batch) as its prompt tokens, in place of what the previous block made of them.

    ``at`` says where the prompt tokens sit: ``"after_first"`` (positions 1..n, after the text's start
    token, where prompt tuning puts its context) or ``"last"`` (the last n positions, where
    :func:`appended_image_tokens` puts them). Done with forward pre-hooks on the blocks, which are
    removed when the body ends (also on an error), so open_clip's own forward runs unchanged.
    """
    if at not in ("after_first", "last"):
        raise ValueError(f"deep prompts sit 'after_first' or 'last', not {at!r}")
    blocks = _tower_blocks(model, tower)
    transformer = _tower_transformer(model, tower)
    batch_first = getattr(transformer, "batch_first", True)
    unknown = sorted(i for i in prompts if not 0 <= i < len(blocks))
    if unknown:
        raise TowerError(f"the {tower} tower has {len(blocks)} blocks; no block {unknown[0]} for a deep prompt")

    def hook_for(prompt: torch.Tensor):
        def replace(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            x = args[0] if batch_first else args[0].transpose(0, 1)
            n = prompt.shape[0]
            tokens = prompt.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
            if at == "after_first":
                x = torch.cat([x[:, :1], tokens, x[:, 1 + n :]], dim=1)
            else:
                x = torch.cat([x[:, : x.shape[1] - n], tokens], dim=1)
            return (x if batch_first else x.transpose(0, 1), *args[1:]), kwargs

        return replace

    handles = []
    try:
        for index, prompt in prompts.items():
            handles.append(blocks[index].register_forward_pre_hook(hook_for(prompt), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def appended_image_tokens(model: nn.Module, tokens: torch.Tensor) -> Iterator[None]:
    """While the body runs, every image's token sequence gets ``tokens`` (n, width) appended after the
    positional embedding, before ``ln_pre`` (where visual prompt tuning and MaPLe put them); the class
    token stays first, so the tower's pooling is unchanged."""
    visual = image_tower(model)
    if not hasattr(visual, "ln_pre"):
        raise TowerError(f"the image tower ({type(visual).__name__}) has no token sequence to append prompts to")

    def append(_module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        extra = tokens.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        return (torch.cat([x, extra], dim=1), *args[1:])

    handle = visual.ln_pre.register_forward_pre_hook(append)
    try:
        yield
    finally:
        handle.remove()


def tower_width(model: nn.Module, tower: str) -> int:
    """Token width of a tower's transformer."""
    return int(_tower_transformer(model, tower).width)


def tower_depth(model: nn.Module, tower: str) -> int:
    """Number of transformer blocks of a tower."""
    return len(_tower_blocks(model, tower))


# ----------------------------------------------------------------------------- structural selectors


def _layernorms(root: nn.Module) -> Iterator[nn.LayerNorm]:
    return (m for m in root.modules() if isinstance(m, nn.LayerNorm) and m.elementwise_affine)


def _mlp_linears(block: nn.Module) -> list[nn.Linear]:
    mlp = getattr(block, "mlp", None)
    if mlp is None:
        raise TowerError(f"text block {type(block).__name__} has no `mlp` feed-forward module")
    return [m for m in mlp.modules() if isinstance(m, nn.Linear)]


def _is_bias(leaf: str) -> bool:
    # nn.Linear/LayerNorm/Conv register "bias"; nn.MultiheadAttention registers "in_proj_bias".
    return leaf in ("bias", "in_proj_bias")


def _biases_of(model: nn.Module, roots: Iterable[nn.Module]) -> list[str]:
    names = module_names(model)
    return [
        f"{names[id(m)]}.{leaf}"
        for root in roots
        for m in root.modules()
        for leaf, p in m.named_parameters(recurse=False)
        if p is not None and _is_bias(leaf)
    ]


def text_ffn_output_biases(model: nn.Module) -> list[str]:
    """Bias of the output (last) Linear of every text feed-forward block."""
    names: list[str] = []
    for block in text_blocks(model):
        linears = [lin for lin in _mlp_linears(block) if lin.bias is not None]
        if linears:
            names += parameter_names(model, linears[-1], ("bias",))
    return names


def text_ffn_biases(model: nn.Module) -> list[str]:
    """Biases of both Linears of every text feed-forward block."""
    return [
        n
        for block in text_blocks(model)
        for lin in _mlp_linears(block)
        if lin.bias is not None
        for n in parameter_names(model, lin, ("bias",))
    ]


def image_layernorms(model: nn.Module) -> list[str]:
    """Weight and bias of every LayerNorm in the image tower."""
    return [n for ln in _layernorms(image_tower(model)) for n in parameter_names(model, ln)]


def text_layernorms(model: nn.Module) -> list[str]:
    """Weight and bias of every LayerNorm in the text tower."""
    return [n for top in text_parts(model) for ln in _layernorms(top) for n in parameter_names(model, ln)]


def image_biases(model: nn.Module) -> list[str]:
    """Every bias tensor of the image tower."""
    return _biases_of(model, [image_tower(model)])


def text_biases(model: nn.Module) -> list[str]:
    """Every bias tensor of the text tower."""
    return _biases_of(model, text_parts(model))


def parameters_of_type(model: nn.Module, kind: type[nn.Module]) -> list[str]:
    """Every parameter (sub-modules included) of the model's modules of type ``kind`` (a head's modules)."""
    names = module_names(model)
    return [f"{names[id(m)]}.{n}" for m in model.modules() if isinstance(m, kind) for n, _ in m.named_parameters()]


def all_but_logit_scale(model: nn.Module) -> list[str]:
    """Every parameter except the temperature (logit scale and bias)."""
    skip = {id(getattr(model, "logit_scale", None)), id(getattr(model, "logit_bias", None))}
    return [n for n, p in model.named_parameters() if id(p) not in skip]


# ----------------------------------------------------------------------------- training behaviour


def set_grad_checkpointing(model: nn.Module, towers: str | None) -> None:
    """Activation checkpointing of the transformer blocks of ``towers`` (``text``, ``image``, ``all``;
    None turns it off everywhere).

    open_clip checkpoints each residual block non-reentrantly, so gradients still reach trained
    tensors inside blocks whose inputs need no gradient (frozen embeddings), and the recomputed
    forward gives the same values.
    """
    if towers is not None and towers not in GRAD_CHECKPOINTING:
        raise ConfigError(f"unknown grad checkpointing '{towers}'; expected one of {', '.join(GRAD_CHECKPOINTING)}")
    text_on = towers in ("text", "all")
    image_on = towers in ("image", "all")
    text = text_module(model)
    if text is not None and hasattr(text, "transformer"):
        text.transformer.grad_checkpointing = text_on
    elif text_on:
        raise ConfigError(f"{type(model).__name__}'s text tower does not support activation checkpointing here")
    visual = getattr(model, "visual", None)
    transformer = getattr(visual, "transformer", None)
    if transformer is not None and hasattr(transformer, "grad_checkpointing"):
        transformer.grad_checkpointing = image_on
    elif image_on:
        raise ConfigError(
            f"the image tower ({type(visual).__name__}) has no transformer blocks to checkpoint; "
            "use --grad-checkpointing text"
        )


def train_mode(model: nn.Module) -> None:
    """Training mode with every BatchNorm left in eval mode (ResNet towers).

    The pretrained running statistics stay as they are: few-shot batches are too small to
    re-estimate them, the checkpoint holds only trained tensors (so moved statistics would be lost
    at evaluation and on resume), and under DDP each process would move its own. BatchNorm affine
    parameters are still trained by the recipes that select them.
    """
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
