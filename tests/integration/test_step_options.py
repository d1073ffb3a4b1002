"""The training step's speed options change how it computes, never what it computes.

Activation checkpointing saves fewer tensors for backward and gives the same step; torch.compile
traces the same step (here with the ``aot_eager`` backend: dynamo + AOTAutograd without code
generation, seconds instead of a minute) and falls back to eager with a warning when it fails;
frozen tensors cost no weight-gradient FLOPs; both options survive a resume.
"""

from __future__ import annotations

import functools
import logging

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from clipfit import engine
from clipfit.cli import train
from clipfit.engine import Trainer, TrainTask
from clipfit.errors import ConfigError
from clipfit.models import build_model
from clipfit.recipes import apply_recipe
from clipfit.rundir import load_checkpoint
from clipfit.runtime import DistEnv
from clipfit.towers import set_grad_checkpointing

CLASSNAMES = ["red circle", "blue star", "green heart", "a_long_class_name_with_words", "x", "yellow square"]


@pytest.fixture
def prepared(tiny_weights, make_trainer):
    """``prepared(recipe="clipfit", **options)``: (model, trainer, state) of a fresh clipfit-tiny ready to step.

    The task has class names only (the steps get their images from _batch); options go to TrainSettings.
    """

    def prepare(recipe: str = "clipfit", **options):
        bundle = build_model("clipfit-tiny", tiny_weights)
        trained = apply_recipe(bundle.model, recipe)
        task = TrainTask([], CLASSNAMES, "a photo of a {}.", reader=None, crop_scale=(0.5, 1.0))
        trainer = make_trainer(bundle, trained, task, **options)
        state = trainer.prepare()
        bundle.model.train()
        return bundle.model, trainer, state

    return prepare


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 5])


def _trained_after(model, trainer, state, steps: int = 2) -> dict[str, torch.Tensor]:
    images, labels = _batch()
    for _ in range(steps):
        trainer.train_step(state, images, labels)
    return {n: p.detach().clone() for n, p in zip(trainer.trained, trainer.params, strict=True)}


def _saved_bytes(trainer, state) -> int:
    """Bytes of the tensors autograd keeps for backward during one step."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    images, labels = _batch()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        trainer.train_step(state, images, labels)
    return total


def test_grad_checkpointing_keeps_fewer_activations_and_the_same_step(prepared):
    plain_saved = _saved_bytes(*prepared()[1:])
    expected = _trained_after(*prepared())
    saved = {}
    for towers in ("text", "image", "all"):
        saved[towers] = _saved_bytes(*prepared(grad_checkpointing=towers)[1:])
        actual = _trained_after(*prepared(grad_checkpointing=towers))
        assert all(torch.equal(actual[n], expected[n]) for n in expected), towers
    assert saved["all"] < min(saved["text"], saved["image"]) and max(saved["text"], saved["image"]) < plain_saved


def test_grad_checkpointing_of_a_resnet_image_tower_is_refused():
    model = build_model("clipfit-tiny-rn", "none").model
    with pytest.raises(ConfigError, match="no transformer blocks to checkpoint"):
        set_grad_checkpointing(model, "image")
    set_grad_checkpointing(model, "text")  # the text tower is a transformer


def test_the_step_keeps_the_cosine_of_successive_gradients(prepared):
    # grad_cos of layers.jsonl: cos(g_t, g_{t-1}) per trained tensor, undefined (NaN) on the first step
    _, trainer, state = prepared()
    g = torch.Generator().manual_seed(1)
    grads = []
    for _ in range(3):
        images, labels = torch.randn(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 5])
        trainer.train_step(state, images, labels)
        grads.append([p.grad.detach().clone() for p in trainer.params])
        if len(grads) == 1:
            assert state.grad_cos.isnan().all()
    expected = torch.stack(
        [
            torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
            for a, b in zip(*grads[1:], strict=True)
        ]
    )
    torch.testing.assert_close(state.grad_cos, expected.double(), rtol=1e-5, atol=1e-6)
    assert len(state.grad_cos) == len(trainer.trained) and (state.grad_cos.abs() < 1).all()
    assert all(torch.equal(kept, last) for kept, last in zip(state.previous_grads, grads[-1], strict=True))


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_frozen_tensors_cost_no_weight_gradient_flops(prepared):
    """Backward of a linear layer is two matmuls (input and weight gradient), each as costly as its
    forward. A ClipFit step must cost about one forward more than the forward (input gradients
    only), full fine-tuning about two."""
    images, labels = _batch()
    model, trainer, state = prepared()
    with torch.no_grad():
        forward = _flops(lambda: state.forward(images, state.objective.inputs))
    step = _flops(lambda: trainer.train_step(state, images, labels))
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(dict(model.named_parameters())[n].grad is None for n in frozen)
    _, full_trainer, full_state = prepared(recipe="full")
    full_step = _flops(lambda: full_trainer.train_step(full_state, images, labels))
    assert 1.5 * forward < step <= 2.05 * forward
    assert full_step > 2.8 * forward


def _aot_eager(monkeypatch) -> None:
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))


def test_compile_traces_the_same_step(prepared, monkeypatch):
    _aot_eager(monkeypatch)
    model, trainer, state = prepared(compile=True)
    assert state.eager is not None  # compiled, not yet confirmed by a step
    names = [n for n, _ in model.named_parameters()]
    actual = _trained_after(model, trainer, state)
    assert state.eager is None and [n for n, _ in model.named_parameters()] == names
    expected = _trained_after(*prepared())
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-7)


def test_compile_failure_falls_back_to_eager_with_a_warning(prepared, monkeypatch, caplog):
    def broken(module, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("no backend today\nmore detail")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="clipfit"):
        actual = _trained_after(*prepared(compile=True))
    assert "torch.compile failed (RuntimeError: no backend today); training without it" in caplog.text
    expected = _trained_after(*prepared())
    assert all(torch.equal(actual[n], expected[n]) for n in expected)


def test_compile_failure_under_torchrun_stops_instead_of_falling_back(prepared, monkeypatch):
    # one process falling back alone would leave the others out of step in DDP's all-reduce
    def broken(module, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("no backend today")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    _, trainer, state = prepared(compile=True)
    trainer.env = DistEnv(rank=1, world_size=2)  # as if launched by torchrun (the step itself is local)
    with pytest.raises(ConfigError, match=r"failed on process 1 .*resume with --no-compile"):
        trainer.train_step(state, *_batch())


def test_compile_without_a_compiler_says_so(prepared, monkeypatch, caplog):
    monkeypatch.setattr(engine.shutil, "which", lambda name: None)
    with caplog.at_level(logging.WARNING, logger="clipfit"):
        _, _, state = prepared(compile=True)
    assert state.eager is None and "needs a C++ compiler" in caplog.text


FLAGS = {"shots": 1, "epochs": 2, "batch_size": 16, "max_eval_images": 32}


@pytest.mark.slow
def test_a_run_resumed_with_speed_options_ends_where_one_without_them_ends(
    train_tiny, tiny_argv, tmp_path, monkeypatch
):
    train_tiny(tmp_path / "plain", **FLAGS)
    original = Trainer._checkpoint

    def checkpoint_then_die(self, epoch, *args, **kwargs):
        original(self, epoch, *args, **kwargs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_checkpoint", checkpoint_then_die)
    assert train.main(tiny_argv(tmp_path / "resumed", **FLAGS)) == 130
    monkeypatch.setattr(Trainer, "_checkpoint", original)
    _aot_eager(monkeypatch)
    assert train.main(["--resume", str(tmp_path / "resumed"), "--compile", "--grad-checkpointing", "-q"]) == 0
    a, b = load_checkpoint(tmp_path / "plain"), load_checkpoint(tmp_path / "resumed")
    assert list(a.final) == list(b.final) and b.meta["complete"]
    for name in a.final:
        torch.testing.assert_close(b.final[name], a.final[name], rtol=1e-5, atol=1e-7)
