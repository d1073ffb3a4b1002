"""clipfit's own forward through open_clip text towers, on sequences cut to the longest prompt.

open_clip's ``encode_text`` always runs the full context (77 tokens for CLIP) because it adds the
whole positional embedding and causal mask. With a causal mask and end-of-text pooling, the
positions after a prompt's end-of-text token cannot influence its feature, so cutting every
sequence of a class set to the longest prompt gives the same features for a fraction of the cost
(class prompts are typically 8-20 tokens). Towers where that does not hold (bidirectional
attention, last-token pooling, CoCa's class token, Hugging Face towers) fall back to
``model.encode_text`` on full sequences.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer, text_global_pool
from torch import nn

_CUTTABLE_POOLS = ("argmax", "eos", "first")


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


def _pool_type(module: nn.Module) -> str:
    return getattr(module, "text_pool_type", None) or getattr(module, "pool_type", "argmax")


def _eos_id(module: nn.Module) -> int | None:
    return getattr(module, "text_eos_id", None) if hasattr(module, "text_eos_id") else getattr(module, "eos_id", None)


def supports_cut(model: nn.Module) -> bool:
    """Whether cutting sequences to the longest prompt leaves the text features unchanged."""
    module = text_module(model)
    if module is None or getattr(module, "attn_mask", None) is None:
        return False
    if getattr(module, "cls_emb", None) is not None or getattr(module, "use_pad_mask", False):
        return False
    return _pool_type(module) in _CUTTABLE_POOLS


def cut_tokens(tokens: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Drop the trailing columns that are padding in every row (keeps at least one column)."""
    used = (tokens != pad_id).any(dim=0).nonzero()
    length = int(used.max()) + 1 if len(used) else 1
    return tokens[:, :length].contiguous()


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
            raise ValueError(f"{type(model).__name__}'s text tower does not accept input embeddings")
        return model.encode_text(tokens, normalize=normalize)
    length = tokens.shape[1]
    cast_dtype = module.transformer.get_cast_dtype()
    x = module.token_embedding(tokens) if token_embeddings is None else token_embeddings
    x = x.to(cast_dtype) + module.positional_embedding[:length].to(cast_dtype)
    x = module.transformer(x, attn_mask=module.attn_mask[:length, :length])
    x = module.ln_final(x)
    x = text_global_pool(x, tokens, _pool_type(module), eos_token_id=_eos_id(module))
    projection = module.text_projection
    if projection is not None:
        x = projection(x) if isinstance(projection, nn.Linear) else x @ projection
    return F.normalize(x, dim=-1) if normalize else x
