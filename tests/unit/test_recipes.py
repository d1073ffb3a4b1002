"""The ClipFit recipe selects exactly the paper's tensors, structurally, and refuses empty groups."""

from __future__ import annotations

import pytest
import torch

from clipfit.models import build_model
from clipfit.recipes import RecipeError, apply_recipe, count_parameters, describe_selection, select, summary_line


def _expected_clipfit_names(text_blocks: int, image_blocks: int) -> set[str]:
    text = {f"transformer.resblocks.{i}.mlp.c_proj.bias" for i in range(text_blocks)}
    image_ln = ["visual.ln_pre", "visual.ln_post"] + [
        f"visual.transformer.resblocks.{i}.{ln}" for i in range(image_blocks) for ln in ("ln_1", "ln_2")
    ]
    return text | {f"{m}.{k}" for m in image_ln for k in ("weight", "bias")}


def test_tiny_vit_trained_set_is_exact(tiny):
    names = apply_recipe(tiny.model, "clipfit")
    assert set(names) == _expected_clipfit_names(text_blocks=2, image_blocks=2)
    # 2 text biases of width 32 + (2 * 2 + 2) LayerNorms x (weight + bias) x 32
    assert count_parameters(tiny.model)[0] == 2 * 32 + 6 * 2 * 32 == 448
    assert [n for n, p in tiny.model.named_parameters() if p.requires_grad] == names


def test_vit_b16_count_matches_the_paper():
    model = build_model("ViT-B-16", "none").model
    names = apply_recipe(model, "clipfit")
    assert set(names) == _expected_clipfit_names(text_blocks=12, image_blocks=12)
    trainable, total = count_parameters(model)
    assert (trainable, total) == (46_080, 149_620_737)  # PAPER.md section 1: 6,144 + 39,936
    assert summary_line(trainable, total) == (
        "trainable params: 46,080 || all params: 149,620,737 || trainable%: 0.0308"
    )


def test_freezing_is_idempotent_and_explicit(tiny):
    for p in tiny.model.parameters():
        p.requires_grad_(True)  # a previous recipe left everything trainable
    first = apply_recipe(tiny.model, "clipfit")
    second = apply_recipe(tiny.model, "clipfit")
    assert first == second
    assert count_parameters(tiny.model)[0] == 448


def test_resnet_image_tower_is_refused_with_the_tower_named():
    model = build_model("RN50", "none").model
    with pytest.raises(RecipeError) as err:
        select(model, "clipfit")
    message = str(err.value)
    assert "image tower" in message and "ModifiedResNet" in message and "LayerNorm" in message
    # The text half alone still works on a ResNet model.
    assert len(select(model, "clipfit-text")) == 12


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
