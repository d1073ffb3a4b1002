"""Prompts, class-name cleaning, tokenisation and class text features.

One template per dataset, no ensembling (PAPER.md section 4); each dataset's template is in its
record (:mod:`clipfit.data.catalog`) and reaches here through ``Dataset.template``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from clipfit.errors import ConfigError

if TYPE_CHECKING:  # the text helpers import torch when they run, so the name rules load without it
    import torch
    from torch import nn


def clean_classname(name: str) -> str:
    """Class-folder names to prompt text: underscores become spaces."""
    return name.replace("_", " ").strip()


def check_template(template: str) -> str:
    """Reject a template without exactly one ``{}`` slot."""
    if template.count("{}") != 1:
        raise ConfigError(f"a prompt template needs exactly one '{{}}' for the class name, got {template!r}")
    return template


def make_prompts(template: str, classnames: Sequence[str]) -> list[str]:
    """``template.format(name)`` for every class, names cleaned."""
    check_template(template)
    return [template.format(clean_classname(c)) for c in classnames]


def class_tokens(
    tokenizer: Callable[..., torch.Tensor], model: nn.Module, template: str, classnames: Sequence[str]
) -> torch.Tensor:
    """Token ids of every class prompt, cut to the longest prompt where that is exact for ``model``."""
    from clipfit.towers import cut_tokens, supports_cut

    tokens = tokenizer(make_prompts(template, classnames))
    return cut_tokens(tokens) if supports_cut(model) else tokens


def text_features(model: nn.Module, tokens: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """L2-normalised text features of token rows, computed in chunks (for 1000-class sets)."""
    import torch
    import torch.nn.functional as F

    from clipfit.towers import encode_text

    device = next(model.parameters()).device
    parts = [encode_text(model, tokens[i : i + chunk].to(device)) for i in range(0, len(tokens), chunk)]
    return F.normalize(torch.cat(parts).float(), dim=-1)
