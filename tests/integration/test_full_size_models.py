"""The full-size open_clip architectures the paper uses (random init, nothing downloaded).

ViT-B/16 has 150M parameters and RN50 100M, so these live here rather than in tests/unit, whose
tests use clipfit-tiny, clipfit-tiny-rn and the shapes world (and meta-device builds).
"""

from __future__ import annotations

import pytest
import torch

from clipfit.models import build_model
from clipfit.prompts import make_prompts
from clipfit.recipes import RecipeError, apply_recipe, count_parameters, select, summary_line
from clipfit.towers import cut_tokens, encode_text, supports_cut

CLASSNAMES = ["red circle", "Annual Crop Land", "a_very_long_class_name_with_many_words_in_it", "x"]


def test_vit_b16_count_matches_the_paper(clipfit_names):
    model = build_model("ViT-B-16", "none").model
    names = apply_recipe(model, "clipfit")
    assert set(names) == clipfit_names(text_blocks=12, image_blocks=12)
    trainable, total = count_parameters(model)
    assert (trainable, total) == (46_080, 149_620_737)  # PAPER.md section 1: 6,144 + 39,936
    assert summary_line(trainable, total) == (
        "trainable params: 46,080 || all params: 149,620,737 || trainable%: 0.0308"
    )


def test_resnet_image_tower_is_refused_with_the_tower_named():
    model = build_model("RN50", "none").model
    with pytest.raises(RecipeError) as err:
        select(model, "clipfit")
    message = str(err.value)
    assert "image tower" in message and "ModifiedResNet" in message and "LayerNorm" in message
    # The text half alone still works on a ResNet model.
    assert len(select(model, "clipfit-text")) == 12


def test_cut_sequences_give_the_full_length_features_on_vit_b16():
    # the clipfit-tiny case: tests/unit/test_text.py
    torch.manual_seed(0)
    bundle = build_model("ViT-B-16", "none")
    model, tokenizer = bundle.model, bundle.tokenizer
    assert supports_cut(model)
    full = tokenizer(make_prompts("a photo of a {}, a type of pet.", CLASSNAMES))
    cut = cut_tokens(full)
    assert cut.shape[1] < full.shape[1] // 3  # the point: far fewer positions
    with torch.no_grad():
        reference = model.encode_text(full)
        ours = encode_text(model, cut)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
