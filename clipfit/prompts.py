"""Prompts, class-name cleaning, tokenisation and class text features.

One template per dataset, no ensembling (PAPER.md section 4); each dataset's template is in its
record (:mod:`clipfit.data.catalog`) and reaches here through ``Dataset.template``.
"""

from __future__ import annotations

import string
import textwrap
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from clipfit.errors import ConfigError

if TYPE_CHECKING:  # the text helpers import torch when they run, so the name rules load without it
    import torch
    from torch import nn


def clean_classname(name: str) -> str:
    """Class-folder names to prompt text: underscores become spaces."""
    return name.replace("_", " ").strip()


def same_prompt_names(classnames: Sequence[str]) -> list[list[str]]:
    """Groups of class names that clean to the same prompt text (``dog`` and ``dog_``), in first-seen order."""
    groups: dict[str, list[str]] = {}
    for name in classnames:
        groups.setdefault(clean_classname(name).casefold(), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def check_template(template: str) -> str:
    """Reject a template that is not text with exactly one ``{}`` slot (literal braces written ``{{`` ``}}``)."""
    slot = "a prompt template needs exactly one '{}' for the class name (literal braces are written {{ and }})"
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:  # a single '{' or '}'
        raise ConfigError(f"{slot}; {template!r} has a stray brace ({exc})") from None
    others = [f"{{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}" for name, spec, conv in fields]
    others = [field for field in others if field != "{}"]
    if others:
        raise ConfigError(f"{slot}; {template!r} has the field {others[0]}, but only a bare {{}} is filled")
    if len(fields) != 1:
        raise ConfigError(f"{slot}; {template!r} has {len(fields)}")
    return template


def make_prompts(template: str, classnames: Sequence[str]) -> list[str]:
    """``template.format(name)`` for every class, names cleaned."""
    check_template(template)
    return [template.format(clean_classname(c)) for c in classnames]


def tokenize(
    tokenizer: Callable[..., torch.Tensor],
    prompts: Sequence[str],
    what: str = "prompt",
    remedy: str = "use a shorter --template (or shorter class names)",
) -> torch.Tensor:
    """Token ids of ``prompts``; a prompt longer than the tokenizer's context length is refused.

    open_clip's tokenizers cut a long prompt to the context length without a word, which drops the
    end of the prompt (with most templates, the class name). The prompts are tokenized once with one
    more position: a token there means the prompt does not fit.

    Raises:
        ConfigError: naming the longest prompt, its length and ``remedy``.
    """
    prompts = list(prompts)
    context = getattr(tokenizer, "context_length", None)
    if isinstance(context, int) and prompts:
        wide = tokenizer(prompts, context_length=context + 1)
        if bool((wide[:, context] != 0).any()):
            if hasattr(tokenizer, "encode"):  # open_clip's BPE tokenizer: the exact count, with start and end
                lengths = [len(tokenizer.encode(p)) + 2 for p in prompts]
            else:
                lengths = [len(p) if bool(wide[i, context] != 0) else 0 for i, p in enumerate(prompts)]
            longest = max(range(len(prompts)), key=lengths.__getitem__)
            size = f"{lengths[longest]} tokens long" if hasattr(tokenizer, "encode") else f"over {context} tokens"
            over = int((wide[:, context] != 0).sum())
            shown = textwrap.shorten(prompts[longest], 200, placeholder=" ...")
            raise ConfigError(
                f"the {what} {shown!r} is {size}, but the model reads only {context}: the tokenizer "
                f"would cut off its end ({over} of {len(prompts)} {what}s are too long); {remedy}"
            )
    return tokenizer(prompts)


def class_tokens(
    tokenizer: Callable[..., torch.Tensor], model: nn.Module, template: str, classnames: Sequence[str]
) -> torch.Tensor:
    """Token ids of every class prompt, cut to the longest prompt where that is exact for ``model``."""
    from clipfit.towers import cut_tokens, supports_cut

    tokens = tokenize(tokenizer, make_prompts(template, classnames))
    return cut_tokens(tokens) if supports_cut(model) else tokens


def text_features(model: nn.Module, tokens: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """L2-normalised text features of token rows, computed in chunks (for 1000-class sets)."""
    import torch
    import torch.nn.functional as F

    from clipfit.towers import encode_text

    device = next(model.parameters()).device
    parts = [encode_text(model, tokens[i : i + chunk].to(device)) for i in range(0, len(tokens), chunk)]
    return F.normalize(torch.cat(parts).float(), dim=-1)
