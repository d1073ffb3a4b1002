"""Each recipe trains, changes only its tensors, and round-trips through its checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from clipfit import linear_probe
from clipfit.cli import eval as eval_cli
from clipfit.data.prepare import prepare_data
from clipfit.data.registry import load_dataset
from clipfit.data.transforms import test_transform as eval_transform
from clipfit.evaluate import EvalSettings
from clipfit.methods import method_of
from clipfit.models import build_model
from clipfit.recipes import RECIPES, apply_recipe
from clipfit.rundir import load_run
from clipfit.trained import build_trained_model

FINETUNE = [name for name, recipe in RECIPES.items() if recipe.method == "finetune"]


@pytest.mark.parametrize("name", FINETUNE)
def test_only_the_recipes_tensors_change(tiny_weights, shapes_task, make_trainer, name):
    bundle = build_model("clipfit-tiny", tiny_weights)
    bundle.head = RECIPES[name].make_head()
    bundle.head.attach(bundle.model, bundle.tokenizer)
    trained = apply_recipe(bundle.model, name)
    before = {n: p.detach().clone() for n, p in bundle.model.named_parameters()}
    reg_weight = 8.0 if RECIPES[name].changes_text else 0.0  # what clipfit.config.resolve decides
    make_trainer(bundle, trained, shapes_task(classes=6), lr=0.01, reg_weight=reg_weight).fit()
    for n, p in bundle.model.named_parameters():
        if n in trained:
            assert not torch.equal(p, before[n]), f"{name}: {n} did not move"
        else:
            assert torch.equal(p, before[n]), f"{name}: frozen {n} changed"


def test_resnet_batchnorm_statistics_stay_pretrained_while_its_affine_parameters_train(shapes_task, make_trainer):
    # ResNet towers: few-shot batches must not overwrite the pretrained running statistics (the
    # checkpoint would not hold them, and DDP processes would each move their own)
    bundle = build_model("clipfit-tiny-rn", "none")
    trained = apply_recipe(bundle.model, "bitfit")
    norms = {n: m for n, m in bundle.model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    stats = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in norms.items()}
    biases = {f"{n}.bias": m.bias.detach().clone() for n, m in norms.items()}
    make_trainer(bundle, trained, shapes_task(classes=6), lr=0.01, reg_weight=0.0).fit()
    assert norms and all(m.training is False for m in norms.values())
    for n, m in norms.items():
        assert torch.equal(m.running_mean, stats[n][0]) and torch.equal(m.running_var, stats[n][1]), n
    assert set(biases) <= set(trained)
    assert any(not torch.equal(bundle.model.get_parameter(n), before) for n, before in biases.items())


@pytest.fixture
def run_recipe(train_tiny, tmp_path):
    """``run_recipe(name, *extra) -> (run_dir, results)``: recipe ``name`` on the shapes world with its own model
    (shapes-vit-tiny / shapes-world), 2 shots, 4 epochs without warm-up, batches of 16, 96 test images."""

    def train(name: str, *extra: str):
        flags = {"model": None, "pretrained": None, "epochs": 4, "warmup_epochs": 0, "batch_size": 16}
        return train_tiny(tmp_path / name, *extra, recipe=name, max_eval_images=96, **flags)

    return train


def _reevaluate(run_dir) -> dict:
    cfg, ckpt, _ = load_run(run_dir)
    bundle = build_trained_model(ckpt)  # from the checkpoint alone
    settings = EvalSettings.of(cfg, torch.device("cpu"), "fp32")
    return method_of(RECIPES[cfg.recipe]).evaluate(bundle, prepare_data(cfg), settings)


@torch.no_grad()
def _train_set_loss(run_dir, which: str) -> float:
    """Cross-entropy of the run's model and head on its few-shot training images, without augmentation
    (the logged losses are over augmented batches of a few steps and too noisy to compare)."""
    cfg, ckpt, _ = load_run(run_dir)
    bundle = build_trained_model(ckpt, which=which)
    model, head, data = bundle.model, bundle.head, prepare_data(cfg)
    to_input = eval_transform(bundle.preprocess)
    images = torch.stack([to_input(data.dataset.reader(s.path)) for s in data.train])
    labels = torch.tensor([s.label for s in data.train])
    classes = head.class_inputs(bundle.tokenizer, model, data.template, data.train_subset.classnames)
    text = F.normalize(head.encode_classes(model, classes), dim=-1)
    logits = model.logit_scale.exp() * F.normalize(head.encode_images(model, images), dim=-1) @ text.T
    return F.cross_entropy(logits, labels).item()


@pytest.mark.slow
@pytest.mark.parametrize("name", FINETUNE)
def test_short_training_lowers_the_loss_and_round_trips(run_recipe, name):
    run_dir, results = run_recipe(name)
    before, after = _train_set_loss(run_dir, "init"), _train_set_loss(run_dir, "final")
    assert after < before, (name, before, after)
    assert results["trainable_summary"].startswith("trainable params: ")
    assert _reevaluate(run_dir) == results["metrics"]


@pytest.mark.slow
def test_zero_shot_recipe_trains_nothing(run_recipe):
    run_dir, results = run_recipe("zero-shot")
    assert results["metrics"] == results["zero_shot"] and results["trainable_params"] == 0
    assert results["trainable_summary"] == "trainable params: 0 || all params: 7,980,673 || trainable%: 0.0000"
    assert _reevaluate(run_dir) == results["metrics"]


@pytest.mark.slow
def test_linear_probe_reports_base_only_and_never_looks_at_test(run_recipe, monkeypatch, capsys):
    seen: list[str] = []
    original = linear_probe._features

    def recording(bundle, samples, *args, **kwargs):
        seen.extend(s.path for s in samples)
        return original(bundle, samples, *args, **kwargs)

    monkeypatch.setattr(linear_probe, "_features", recording)
    run_dir, results = run_recipe("linear-probe")
    test_paths = {s.path for s in load_dataset("shapes").test}
    assert seen and not set(seen) & test_paths  # C was chosen on val; the probe was fit on train
    assert results["metrics"]["new_acc"] is None and results["metrics"]["hm"] is None
    assert results["metrics"]["base_acc"] > 10  # far above chance (3.1%) with 2 shots
    assert results["probe"]["val_images"] == 32 * 2 and results["probe"]["C"] > 0
    # 32 base classes x (128 + 1) probe values
    assert results["trainable_params"] == 32 * 129
    assert _reevaluate(run_dir) == results["metrics"]
    # its classifier knows only the base classes: transfer to another dataset is refused, not faked
    assert eval_cli.main(["--checkpoint", str(run_dir), "--datasets", "shapes-pretrain", "-q"]) == 2
    assert "is a linear probe: its classifier is tied to the shapes classes" in capsys.readouterr().err


@pytest.mark.slow
def test_transfer_evaluates_through_the_recipes_head(run_recipe):
    # CoOp's learned context must be used on the target (it once fell back to plain CLIP there, which
    # made every head recipe's transfer accuracy equal to zero-shot)
    run_dir, _ = run_recipe("coop")
    argv = ["--checkpoint", str(run_dir), "--datasets", "shapes", "--max-eval-images", "256", "-q"]
    assert eval_cli.main(argv) == 0
    target = json.loads((run_dir / "eval" / "shapes" / "results.json").read_text())
    assert target["metrics"] != target["zero_shot"]
    zero_shot_run = run_recipe("zero-shot", "--setting", "fewshot", "--max-eval-images", "256")[1]
    assert target["zero_shot"] == zero_shot_run["metrics"]  # zero-shot is plain CLIP, not the random context
