"""CoCoOp, KgCoOp and MaPLe: what makes each of them what it is, on tiny models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipfit.heads import CoCoOpHead, MaPLeHead
from clipfit.models import build_model
from clipfit.objective import Objective
from clipfit.recipes import apply_recipe, get_recipe

CLASSES = ["red circle", "blue star", "green ring", "yellow heart"]


def test_cocoop_class_features_differ_per_image_and_come_from_one_text_pass():
    # shapes-vit-tiny: image features of 128 values, so the meta-net's bottleneck has 128 / 16 = 8 units
    # (clipfit-tiny's 32 / 16 = 2 ReLUs are often both off)
    torch.manual_seed(0)
    tiny = build_model("shapes-vit-tiny", "none")
    head = CoCoOpHead.from_options({"coop_init": "a photo of a"})
    head.attach(tiny.model, tiny.tokenizer, CLASSES)
    inputs = head.class_inputs(tiny.tokenizer, tiny.model, "", CLASSES)
    images = F.normalize(torch.randn(3, 128), dim=-1)
    with torch.no_grad():
        features = head.encode_classes_per_image(tiny.model, inputs, images)
        again = head.encode_classes_per_image(tiny.model, inputs, images[[1, 0, 2]])
    assert features.shape == (3, len(CLASSES), 128)
    assert not torch.allclose(features[0], features[1], atol=1e-4)  # conditioned on the image
    torch.testing.assert_close(again[0], features[1])  # and on nothing else (not its position in the batch)
    # the meta-net's token is what makes them differ: without it every image gets the context's features
    with torch.no_grad():
        tiny.model.prompt.meta_net[2].weight.zero_()
        tiny.model.prompt.meta_net[2].bias.zero_()
        flat = head.encode_classes_per_image(tiny.model, inputs, images)
        context = head.encode_classes(tiny.model, inputs)
    for i in range(3):
        torch.testing.assert_close(flat[i], context, rtol=1e-5, atol=1e-6)


def test_kgcoop_term_is_zero_at_initialisation_from_the_hand_crafted_prompt(tiny):
    recipe = get_recipe("kgcoop")
    head = recipe.make_head()
    assert head.coop_init == "a photo of a" and recipe.defaults["reg_weight"] == 8.0
    head.attach(tiny.model, tiny.tokenizer, CLASSES)
    trained = apply_recipe(tiny.model, recipe)
    template = "a photo of a {}."  # the hand-crafted prompt the context starts from
    objective = Objective.build(tiny.model, head, tiny.tokenizer, template, CLASSES, trained, 8.0, torch.device("cpu"))
    parts = objective.batch_loss(torch.randn(2, 3, 32, 32), torch.tensor([0, 3]))
    assert parts.reg.abs().item() < 1e-6  # the learned prompt is the hand-crafted one: no distance yet
    with torch.no_grad():
        # random per channel: a shift of every channel by one constant is what LayerNorm would undo
        tiny.model.prompt.ctx.add_(0.5 * torch.randn_like(tiny.model.prompt.ctx))
    moved = objective.batch_loss(torch.randn(2, 3, 32, 32), torch.tensor([0, 3]))
    assert moved.reg.item() > 1e-3 and moved.loss.item() == pytest.approx(moved.ce.item() + 8.0 * moved.reg.item())


def _block_inputs(blocks) -> tuple[list, list]:
    """Forward hooks that record each block's input as it really ran (after any pre-hook replaced tokens)."""
    seen: list = [None] * len(blocks)
    handles = [
        b.register_forward_hook(lambda m, args, out, i=i: seen.__setitem__(i, args[0].detach()))
        for i, b in enumerate(blocks)
    ]
    return seen, handles


def test_maple_prompts_reach_the_blocks_they_should_and_no_others():
    torch.manual_seed(0)
    bundle = build_model("shapes-vit-tiny", "none")  # 4 + 4 blocks
    model = bundle.model
    head = MaPLeHead.from_options({"maple_depth": 3})  # prompts in blocks 0, 1 and 2 of both towers
    head.attach(model, bundle.tokenizer, CLASSES)
    prompts = model.prompt
    n = head.maple_ctx
    assert sorted(prompts.deep_text) == ["1", "2"]

    text_blocks = list(model.transformer.resblocks)
    seen, handles = _block_inputs(text_blocks)
    inputs = head.class_inputs(bundle.tokenizer, model, "", CLASSES)
    with torch.no_grad():
        head.encode_classes(model, inputs)
    for h in handles:
        h.remove()
    for i in (1, 2):  # the deep prompts of blocks 1 and 2 sit after [SOS] in every class's sequence
        torch.testing.assert_close(seen[i][:, 1 : 1 + n], prompts.deep_text[str(i)].expand(len(CLASSES), -1, -1))
    assert not torch.allclose(seen[3][:, 1 : 1 + n], prompts.deep_text["2"].expand(len(CLASSES), -1, -1))

    image_blocks = list(model.visual.transformer.resblocks)
    seen, handles = _block_inputs(image_blocks)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        head.encode_images(model, images)
        plain_tokens = model.visual.positional_embedding.shape[0]
    for h in handles:
        h.remove()
    assert all(x.shape[1] == plain_tokens + n for x in seen)  # the coupled tokens are appended once, before block 0
    with torch.no_grad():
        for i in (1, 2):  # coupled from the same block's text prompts: deep_proj[i](deep_text[i])
            coupled = prompts.deep_proj[str(i)](prompts.deep_text[str(i)])
            torch.testing.assert_close(seen[i][:, -n:], coupled.expand(2, -1, -1))
        assert not torch.allclose(seen[3][:, -n:], prompts.deep_proj["2"](prompts.deep_text["2"]).expand(2, -1, -1))
    # and nothing stays hooked: the plain model afterwards is the plain model
    assert all(not b._forward_pre_hooks for b in text_blocks + image_blocks)
    assert not model.visual.ln_pre._forward_pre_hooks


def test_maple_starts_from_the_hand_crafted_prompt_on_the_text_side():
    torch.manual_seed(0)
    bundle = build_model("shapes-vit-tiny", "none")
    head = MaPLeHead.from_options({"maple_depth": 1})  # only the shallow prompts: no deep ones, nothing random
    head.attach(bundle.model, bundle.tokenizer, CLASSES)
    from clipfit.heads import ClipHead

    plain = ClipHead()
    with torch.no_grad():
        maple = head.encode_classes(bundle.model, head.class_inputs(bundle.tokenizer, bundle.model, "", CLASSES))
        zero_shot = plain.encode_classes(
            bundle.model, plain.class_inputs(bundle.tokenizer, bundle.model, "a photo of a {}.", CLASSES)
        )
    torch.testing.assert_close(maple, zero_shot, rtol=1e-5, atol=1e-5)


def test_maple_gets_gradients_into_its_image_side_couplings(tiny):
    head = MaPLeHead()
    head.attach(tiny.model, tiny.tokenizer, CLASSES)
    trained = apply_recipe(tiny.model, "maple")
    objective = Objective.build(tiny.model, head, tiny.tokenizer, "", CLASSES, trained, 0.0, torch.device("cpu"))
    assert objective.image_trainable and objective.fixed_text is None
    objective.batch_loss(torch.randn(2, 3, 32, 32), torch.tensor([0, 1])).loss.backward()
    for name, param in tiny.model.named_parameters():
        if name in trained:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
