"""Every recipe selects exactly its tensors on a tiny model; heads start from zero-shot CLIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipfit.heads import AdapterHead, ClipHead, CoOpHead
from clipfit.linear_probe import search_c
from clipfit.recipes import RECIPES, apply_recipe, count_parameters, get_recipe

CLASSES = ["red circle", "blue star", "green ring"]


def _block_names(prefix: str, n: int, parts: list[str]) -> set[str]:
    return {f"{prefix}.resblocks.{i}.{p}" for i in range(n) for p in parts}


# clipfit-tiny: width 32 in both towers, 2 + 2 blocks, MLP width 128, embed_dim 32.
IMAGE_LN = {f"visual.{m}.{k}" for m in ("ln_pre", "ln_post") for k in ("weight", "bias")} | _block_names(
    "visual.transformer", 2, ["ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias"]
)
TEXT_LN = {"ln_final.weight", "ln_final.bias"} | _block_names(
    "transformer", 2, ["ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias"]
)
BLOCK_BIASES = ["attn.in_proj_bias", "attn.out_proj.bias", "ln_1.bias", "ln_2.bias", "mlp.c_fc.bias", "mlp.c_proj.bias"]
EXPECTED: dict[str, tuple[set[str] | None, int]] = {
    "clipfit": (_block_names("transformer", 2, ["mlp.c_proj.bias"]) | IMAGE_LN, 2 * 32 + 12 * 32),
    "clipfit-text": (_block_names("transformer", 2, ["mlp.c_proj.bias"]), 2 * 32),
    "clipfit-image": (IMAGE_LN, 12 * 32),
    "clipfit-fc": (
        _block_names("transformer", 2, ["mlp.c_fc.bias", "mlp.c_proj.bias"]) | IMAGE_LN,
        2 * (128 + 32) + 384,
    ),
    "bitfit": (
        _block_names("visual.transformer", 2, BLOCK_BIASES)
        | _block_names("transformer", 2, BLOCK_BIASES)
        | {"visual.ln_pre.bias", "visual.ln_post.bias", "ln_final.bias"},
        # per block: in_proj 96 + out_proj 32 + 2 LN 64 + c_fc 128 + c_proj 32 = 352; 4 blocks; + 3 LN biases
        4 * 352 + 3 * 32,
    ),
    "ln-tuning": (IMAGE_LN | TEXT_LN, (12 + 10) * 32),
    "full": (None, 1_643_297 - 1),  # everything but the logit scale
    "coop": ({"prompt.ctx"}, 16 * 32),
    "clip-adapter": ({"adapter.fc.0.weight", "adapter.fc.2.weight"}, 2 * 32 * 8),
    # CoCoOp: 4 context vectors ("a photo of a") + meta-net Linear(32, 2) - ReLU - Linear(2, 32), with biases
    "cocoop": (
        {"prompt.ctx"} | {f"prompt.meta_net.{i}.{k}" for i in (0, 2) for k in ("weight", "bias")},
        4 * 32 + (32 * 2 + 2) + (2 * 32 + 32),
    ),
    "kgcoop": ({"prompt.ctx"}, 4 * 32),
    # MaPLe on 2 + 2 blocks: J = 2, so block 1 gets deep prompts; 2 tokens of width 32, couplings 32 -> 32
    "maple": (
        {"prompt.ctx", "prompt.proj.weight", "prompt.proj.bias", "prompt.deep_text.1"}
        | {f"prompt.deep_proj.1.{k}" for k in ("weight", "bias")},
        2 * (2 * 32 + 32 * 32 + 32),
    ),
    "zero-shot": (set(), 0),
    "linear-probe": ({"probe.weight", "probe.bias"}, 3 * 32 + 3),
}


def _prepared(tiny, name: str) -> list[str]:
    recipe = get_recipe(name)
    recipe.make_head().attach(tiny.model, tiny.tokenizer, CLASSES)
    return apply_recipe(tiny.model, recipe)


def test_every_recipe_is_covered():
    assert set(EXPECTED) == set(RECIPES)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_exact_trained_set(tiny, name):
    names = _prepared(tiny, name)
    expected, count = EXPECTED[name]
    if expected is None:
        expected = {n for n, _ in tiny.model.named_parameters()} - {"logit_scale"}
    assert set(names) == expected
    assert count_parameters(tiny.model)[0] == count


def test_coop_initialised_from_a_phrase_reproduces_zero_shot_logits(tiny):
    head = CoOpHead.from_options({"coop_init": "a photo of a"})
    head.attach(tiny.model, tiny.tokenizer)
    assert head.coop_ctx == 4 and tuple(tiny.model.prompt.ctx.shape) == (4, 32)
    with torch.no_grad():
        coop = F.normalize(
            head.encode_classes(tiny.model, head.class_inputs(tiny.tokenizer, tiny.model, "", CLASSES)), dim=-1
        )
        plain = ClipHead()
        zero_shot = F.normalize(
            plain.encode_classes(
                tiny.model, plain.class_inputs(tiny.tokenizer, tiny.model, "a photo of a {}.", CLASSES)
            ),
            dim=-1,
        )
    torch.testing.assert_close(coop, zero_shot, rtol=1e-5, atol=1e-6)


def test_coop_random_context_has_sixteen_vectors_and_differs(tiny):
    head = CoOpHead()
    head.attach(tiny.model, tiny.tokenizer)
    inputs = head.class_inputs(tiny.tokenizer, tiny.model, "a photo of a {}.", CLASSES)
    # [SOS] + 16 context placeholders + the class name: the class token comes last
    assert tuple(tiny.model.prompt.ctx.shape) == (16, 32) and inputs.shape[1] >= 1 + 16 + 2
    assert 0.015 < tiny.model.prompt.ctx.std().item() < 0.025


def test_adapter_starts_at_zero_residual_and_reproduces_zero_shot_logits(tiny):
    head = AdapterHead()
    head.attach(tiny.model, tiny.tokenizer)
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        adapted = F.normalize(head.encode_images(tiny.model, images), dim=-1)
        plain = F.normalize(tiny.model.encode_image(images), dim=-1)
    torch.testing.assert_close(adapted, plain)
    # and it is trainable from there: the zero layer gets a gradient
    apply_recipe(tiny.model, "clip-adapter")
    head.encode_images(tiny.model, images).pow(2).sum().backward()
    assert tiny.model.adapter.fc[2].weight.grad.abs().sum() > 0


def _blobs(rng: np.random.Generator, n: int, centres: np.ndarray, spread: float) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % len(centres)
    x = centres[labels] + spread * rng.standard_normal((n, centres.shape[1]))
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def test_linear_probe_separates_separable_features():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:4] * 3
    train_x, train_y = _blobs(rng, 40, centres, 0.1)
    val_x, val_y = _blobs(rng, 16, centres, 0.1)
    test_x, test_y = _blobs(rng, 200, centres, 0.1)
    c, tried = search_c(train_x, train_y, val_x, val_y)
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, max_iter=1000).fit(train_x, train_y)
    assert (clf.predict(test_x) == test_y).mean() == 1.0
    assert len(tried) == 7 + 2 * 4  # coarse grid, then 4 bisection steps of two fits


def test_linear_probe_picks_the_c_with_the_best_validation_accuracy():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((3, 16))
    train_x, train_y = _blobs(rng, 30, centres, 1.5)
    val_x, val_y = _blobs(rng, 12, centres, 1.5)
    c, tried = search_c(train_x, train_y, val_x, val_y)
    best = max(acc for _, acc in tried)
    assert dict(tried)[c] == best
    assert c == min(c for c, acc in tried if acc == best)  # ties go to the stronger regulariser
