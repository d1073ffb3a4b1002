"""The full-size open_clip architectures the paper uses (random init, nothing downloaded).

ViT-B/16 has 150M parameters and RN50 100M, so these live here rather than in tests/unit, whose
tests use clipfit-tiny, clipfit-tiny-rn and the shapes world (and meta-device builds).
"""

from __future__ import annotations

from checks import assert_cut_sequences_give_the_full_length_features, assert_resnet_image_tower_is_refused

from clipfit.models import build_model
from clipfit.recipes import apply_recipe, count_parameters, summary_line


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
    assert_resnet_image_tower_is_refused("RN50", text_blocks=12)


def test_cut_sequences_give_the_full_length_features_on_vit_b16():
    assert_cut_sequences_give_the_full_length_features("ViT-B-16")  # clipfit-tiny: tests/unit/test_text.py
