"""Checks run on several architectures: the unit tier runs them on tiny models, tests/integration on
the full-size ones the paper uses."""

from __future__ import annotations

import pytest
import torch

from clipfit.models import build_model
from clipfit.prompts import make_prompts
from clipfit.recipes import RecipeError, select
from clipfit.towers import cut_tokens, encode_text, supports_cut

CLASSNAMES = ["red circle", "Annual Crop Land", "a_very_long_class_name_with_many_words_in_it", "x"]


def assert_cut_sequences_give_the_full_length_features(arch: str) -> None:
    """clipfit's text forward on sequences cut to the longest prompt equals open_clip's full-length one."""
    torch.manual_seed(0)
    bundle = build_model(arch, "none")
    model, tokenizer = bundle.model, bundle.tokenizer
    assert supports_cut(model)
    full = tokenizer(make_prompts("a photo of a {}, a type of pet.", CLASSNAMES))
    cut = cut_tokens(full)
    assert cut.shape[1] < full.shape[1] // 3  # the point: far fewer positions
    with torch.no_grad():
        reference = model.encode_text(full)
        ours = encode_text(model, cut)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def assert_resnet_image_tower_is_refused(arch: str, text_blocks: int) -> None:
    """ClipFit's image rule names the ResNet tower it cannot select from; the text rule still works."""
    model = build_model(arch, "none").model
    with pytest.raises(RecipeError) as err:
        select(model, "clipfit")
    message = str(err.value)
    assert "image tower" in message and "ModifiedResNet" in message and "LayerNorm" in message
    assert len(select(model, "clipfit-text")) == text_blocks  # one bias per text block
