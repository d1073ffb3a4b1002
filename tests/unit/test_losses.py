"""The ClipFit objective: values by hand, the regulariser at step 0 and where its gradient goes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from clipfit.layers import describe
from clipfit.objective import clipfit_loss, text_regulariser
from clipfit.prompts import class_tokens
from clipfit.recipes import apply_recipe
from clipfit.towers import encode_text


def test_loss_matches_a_hand_computation():
    # Two images, three classes, 2-d features; scale s = exp(log 10) = 10.
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    t0 = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6]])
    labels = torch.tensor([0, 1])
    parts = clipfit_loss(img, txt, labels, torch.tensor(math.log(10.0)), t0, reg_weight=8.0)
    # logits row 0: 10 * [1, 0, 0.8]; row 1: 10 * [0.6, 0.8, 0.96]
    ce0 = -10.0 + math.log(math.exp(10.0) + math.exp(0.0) + math.exp(8.0))
    ce1 = -8.0 + math.log(math.exp(6.0) + math.exp(8.0) + math.exp(9.6))
    # cosines to t0: 1, 0.8, 1 -> regulariser 1 - 2.8 / 3
    reg = 1.0 - (1.0 + 0.8 + 1.0) / 3.0
    assert math.isclose(parts.ce.item(), (ce0 + ce1) / 2, rel_tol=1e-6)
    assert math.isclose(parts.reg.item(), reg, rel_tol=1e-5)
    assert math.isclose(parts.loss.item(), (ce0 + ce1) / 2 + 8.0 * reg, rel_tol=1e-6)


def test_distributed_normaliser_sums_over_the_global_batch():
    img = F.normalize(torch.randn(4, 3), dim=-1)
    txt = F.normalize(torch.randn(5, 3), dim=-1)
    labels = torch.tensor([0, 1, 2, 3])
    mean = clipfit_loss(img, txt, labels, torch.tensor(2.0), None, 0.0).loss
    halves = [
        clipfit_loss(img[i : i + 2], txt, labels[i : i + 2], torch.tensor(2.0), None, 0.0, ce_normaliser=4)
        for i in (0, 2)
    ]
    torch.testing.assert_close(halves[0].loss + halves[1].loss, mean)


def test_regulariser_is_zero_at_step_zero_and_only_reaches_text(tiny):
    model = tiny.model
    trained = apply_recipe(model, "clipfit")
    tokens = class_tokens(tiny.tokenizer, model, "a photo of a {}.", ["red circle", "blue star", "green ring"])
    with torch.no_grad():
        t0 = encode_text(model, tokens, normalize=True)
    assert text_regulariser(encode_text(model, tokens, normalize=True), t0).abs().item() < 1e-6
    # Move the text biases, then the regulariser is positive and its gradient lands on text tensors only.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in trained and describe(name).tower == "text":
                param.add_(torch.randn_like(param) * 0.5)
    reg = text_regulariser(encode_text(model, tokens, normalize=True), t0)
    assert reg.item() > 1e-4
    reg.backward()
    for name, param in model.named_parameters():
        if name not in trained:
            continue
        if describe(name).tower == "text":
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def test_zero_weight_skips_the_regulariser():
    img = F.normalize(torch.randn(2, 3), dim=-1)
    txt = F.normalize(torch.randn(4, 3), dim=-1)
    parts = clipfit_loss(img, txt, torch.tensor([0, 3]), torch.tensor(1.0), None, reg_weight=0.0)
    assert parts.reg.item() == 0.0 and torch.equal(parts.loss.detach(), parts.ce)
