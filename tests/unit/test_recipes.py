"""The ClipFit recipe selects exactly the paper's tensors, structurally, and refuses empty groups.

On clipfit-tiny; the full-size ViT-B-16 and RN50 cases are in tests/integration/test_full_size_models.py.
"""

from __future__ import annotations

import pytest
import torch
from checks import assert_resnet_image_tower_is_refused

from clipfit.recipes import RecipeError, apply_recipe, count_parameters, describe_selection, select


def test_tiny_vit_trained_set_is_exact(tiny, clipfit_names):
    names = apply_recipe(tiny.model, "clipfit")
    assert set(names) == clipfit_names(text_blocks=2, image_blocks=2)
    # 2 text biases of width 32 + (2 * 2 + 2) LayerNorms x (weight + bias) x 32
    assert count_parameters(tiny.model)[0] == 2 * 32 + 6 * 2 * 32 == 448
    assert [n for n, p in tiny.model.named_parameters() if p.requires_grad] == names


def test_freezing_is_idempotent_and_explicit(tiny):
    for p in tiny.model.parameters():
        p.requires_grad_(True)  # a previous recipe left everything trainable
    first = apply_recipe(tiny.model, "clipfit")
    second = apply_recipe(tiny.model, "clipfit")
    assert first == second
    assert count_parameters(tiny.model)[0] == 448


def test_resnet_image_tower_is_refused_with_the_tower_named():
    # clipfit-tiny-rn has open_clip's ModifiedResNet image tower (RN50 itself: tests/integration)
    assert_resnet_image_tower_is_refused("clipfit-tiny-rn", text_blocks=2)


def test_selection_is_structural_not_by_substring(tiny):
    # A parameter whose *name* looks like a LayerNorm bias but is not one must not be selected.
    tiny.model.visual.ln_fake_bias = torch.nn.Parameter(torch.zeros(3))
    names = select(tiny.model, "clipfit")
    assert "visual.ln_fake_bias" not in names
    # And a LayerNorm under an unusual name is selected because it is a LayerNorm.
    tiny.model.visual.extra_norm = torch.nn.LayerNorm(32)
    assert {"visual.extra_norm.weight", "visual.extra_norm.bias"} <= set(select(tiny.model, "clipfit"))


def test_unknown_recipe_lists_the_known_ones(tiny):
    with pytest.raises(RecipeError, match="known recipes: clipfit"):
        select(tiny.model, "clipfitt")


def test_describe_selection_reports_each_rule(tiny):
    text = describe_selection(tiny.model, "clipfit")
    assert "[text] bias of the output Linear of every feed-forward block: 2 tensors, 64 values" in text
    assert "[image] weight and bias of every LayerNorm: 12 tensors, 384 values" in text
