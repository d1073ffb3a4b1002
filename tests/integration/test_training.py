"""Training invariants, checkpoints and resume, on clipfit-tiny and the shapes world."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipfit.checkpoint import CheckpointError, apply_checkpoint
from clipfit.cli import train
from clipfit.data.loaders import TRAIN_CACHES
from clipfit.data.prepare import prepare_data
from clipfit.engine import Trainer
from clipfit.evaluate import EvalSettings
from clipfit.methods import method_of
from clipfit.models import build_model
from clipfit.objective import clipfit_loss
from clipfit.prompts import class_tokens
from clipfit.recipes import apply_recipe, get_recipe
from clipfit.rundir import load_checkpoint, load_run
from clipfit.towers import encode_text
from clipfit.trained import build_trained_model


@pytest.fixture
def trainer_of(make_trainer, shapes_task):
    """``trainer_of(bundle, trained, run_dir=None)``: ClipFit's trainer for one epoch on 8 shapes classes."""

    def trainer(bundle, trained, run_dir=None) -> Trainer:
        meta = {"model": bundle.name, "pretrained": bundle.pretrained, "recipe": "clipfit"}
        return make_trainer(bundle, trained, shapes_task(), run_dir=run_dir, checkpoint_meta=meta, log_every=2)

    return trainer


def test_only_the_selected_tensors_change_and_all_of_them_do(tiny_weights, trainer_of):
    bundle = build_model("clipfit-tiny", tiny_weights)
    trained = apply_recipe(bundle.model, "clipfit")
    before = {n: p.detach().clone() for n, p in bundle.model.named_parameters()}
    trainer_of(bundle, trained).fit()
    for name, param in bundle.model.named_parameters():
        if name in trained:
            assert not torch.equal(param, before[name]), f"{name} was selected but did not move"
        else:
            assert torch.equal(param, before[name]), f"{name} is frozen but changed"


def test_every_selected_tensor_gets_a_gradient(tiny_weights, shapes_task):
    bundle = build_model("clipfit-tiny", tiny_weights)
    model = bundle.model
    trained = set(apply_recipe(model, "clipfit"))
    task = shapes_task()
    tokens = class_tokens(bundle.tokenizer, model, task.template, task.classnames)
    with torch.no_grad():
        t0 = encode_text(model, tokens, normalize=True)
    with torch.no_grad():  # move the text biases so the regulariser has a gradient too
        model.transformer.resblocks[0].mlp.c_proj.bias.add_(0.1)
    images = torch.randn(4, 3, 32, 32)
    img = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
    txt = encode_text(model, tokens, normalize=True)
    clipfit_loss(img, txt, torch.tensor([0, 1, 2, 3]), model.logit_scale, t0, 8.0).loss.backward()
    for name, param in model.named_parameters():
        if name in trained:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, f"frozen {name} received a weight gradient"


def test_checkpoint_round_trip_reproduces_logits(tiny_weights, tmp_path, trainer_of):
    bundle = build_model("clipfit-tiny", tiny_weights)
    trained = apply_recipe(bundle.model, "clipfit")
    trainer_of(bundle, trained, tmp_path).fit()
    ckpt = load_checkpoint(tmp_path)
    assert sorted(ckpt.final) == sorted(trained)
    assert ckpt.meta["pretrained"] == tiny_weights
    # Rebuilt from the checkpoint alone: architecture, pretrained source and recipe come from its metadata.
    restored = build_trained_model(ckpt)
    images = torch.randn(3, 3, 32, 32)
    tokens = class_tokens(bundle.tokenizer, bundle.model, "a photo of a {}.", ["red circle", "blue star"])
    with torch.no_grad():
        for model in (bundle.model, restored.model):
            model.eval()
        expected = bundle.model.encode_image(images) @ encode_text(bundle.model, tokens).T
        actual = restored.model.encode_image(images) @ encode_text(restored.model, tokens).T
    assert torch.equal(expected, actual)
    # and init/ holds the pretrained values
    fresh = dict(build_model("clipfit-tiny", tiny_weights).model.named_parameters())
    assert all(torch.equal(ckpt.init[n], fresh[n]) for n in trained)


# The runs of this file: the suite's tiny run (see tiny_argv) in batches of 16, logged every 2 steps.
FLAGS = {"batch_size": 16, "log_every": 2}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, train_tiny) -> Path:
    """A finished run of this file's flags, for the tests that only read it (none may write into it)."""
    return train_tiny(tmp_path_factory.mktemp("finished") / "run", **FLAGS)[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("killed_after", "extra"),
    [
        (1, ()),
        (2, ()),
        (1, ("--recipe", "coop")),
        (1, ("--recipe", "clip-adapter", "--pretrained", "none")),
        (1, ("--recipe", "cocoop")),
        (2, ("--recipe", "maple")),
        (2, ("--precision", "fp16")),
        (2, ("--checkpoint-every", "2")),
    ],
    ids=[
        "clipfit-epoch1",
        "clipfit-epoch2",
        "coop-random-context",
        "adapter-random-init",
        "cocoop-meta-net",
        "maple-deep-prompts",
        "fp16-grad-scaler",
        "every-2-epochs",
    ],
)
def test_a_killed_and_resumed_run_ends_bit_identical(
    request, tiny_argv, train_tiny, tmp_path, monkeypatch, killed_after, extra
):
    # random heads and --pretrained none are built from the run's seed, so the resumed process
    # rebuilds the same starting point. The run trained through without a kill: without extra flags,
    # the file's finished run.
    if extra:
        through, _ = train_tiny(tmp_path / "through", *extra, **FLAGS)
    else:
        through = request.getfixturevalue("finished_run")
    original = Trainer._checkpoint

    written: list[int] = []

    def checkpoint_then_die(self, epoch, *args, **kwargs):
        original(self, epoch, *args, **kwargs)
        written.append(epoch)
        if epoch == killed_after:
            raise KeyboardInterrupt  # the process dies right after the epoch's checkpoint

    monkeypatch.setattr(Trainer, "_checkpoint", checkpoint_then_die)
    assert train.main(tiny_argv(tmp_path / "killed", *extra, **FLAGS)) == 130
    assert written == ([2] if "--checkpoint-every" in extra else list(range(1, killed_after + 1)))
    partial = load_checkpoint(tmp_path / "killed")
    assert partial.meta["epoch"] == killed_after and not partial.meta["complete"]
    assert partial.optim and "torch" in partial.rng  # what resuming needs is in the checkpoint
    if "fp16" in extra:  # and the loss scaler's state (its growth tracker counts the steps since a skip)
        assert partial.meta["grad_scaler"]["_growth_tracker"] > 0
    monkeypatch.setattr(Trainer, "_checkpoint", original)
    assert train.main(["--resume", str(tmp_path / "killed"), "-q"]) == 0

    a, b = load_checkpoint(through), load_checkpoint(tmp_path / "killed")
    assert a.final.keys() == b.final.keys()
    assert all(torch.equal(a.final[n], b.final[n]) for n in a.final)
    for log in ("metrics.jsonl", "layers.jsonl"):
        assert (through / log).read_text() == (tmp_path / "killed" / log).read_text()
    ra = json.loads((through / "results.json").read_text())
    rb = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert ra["metrics"] == rb["metrics"] and ra["zero_shot"] == rb["zero_shot"]
    # and the checkpoint alone rebuilds the evaluated model, random frozen weights included
    cfg, ckpt, _ = load_run(tmp_path / "killed")
    bundle = build_trained_model(ckpt)
    settings = EvalSettings.of(cfg, torch.device("cpu"), "fp32")
    assert method_of(get_recipe(cfg.recipe)).evaluate(bundle, prepare_data(cfg), settings) == rb["metrics"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder: dataset of 8 classes x 10 JPEGs of 60x45 px: larger than clipfit-tiny's 32 px crops, so the
    default pipeline crops the original pixels and the crop-size cache a 43x32 copy."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for c in range(8):
        colour = rng.integers(0, 256, 3)
        for i in range(10):
            pixels = np.clip(colour + rng.normal(0, 40, (45, 60, 3)), 0, 255).astype(np.uint8)
            path = root / f"class_{c}" / f"{i:02d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path, quality=90)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("cache", TRAIN_CACHES)
def test_a_killed_and_resumed_run_on_image_files_ends_bit_identical(
    tiny_argv, train_tiny, tmp_path, monkeypatch, capsys, photos, cache
):
    # 2 shots of 4 base classes in batches of 4: 2 steps per epoch, views read from the JPEGs; the run
    # through has no DataLoader workers, the killed one 2 and the resumed one 1 (the views do not care)
    flags = {**FLAGS, "dataset": f"folder:{photos}", "batch_size": 4, "train_cache": cache}
    through, _ = train_tiny(tmp_path / "through", num_workers=0, **flags)
    assert json.loads((through / "config.json").read_text())["config"]["data"]["train_cache"] == cache
    original = Trainer._checkpoint

    def checkpoint_then_die(self, epoch, *args, **kwargs):
        original(self, epoch, *args, **kwargs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_checkpoint", checkpoint_then_die)
    killed = tmp_path / "killed"
    assert train.main(tiny_argv(killed, num_workers=2, **flags)) == 130
    monkeypatch.setattr(Trainer, "_checkpoint", original)
    # the other pipeline changes what is trained: neither a resume nor a rerun may switch to it
    other = next(c for c in TRAIN_CACHES if c != cache)
    capsys.readouterr()
    assert train.main(["--resume", str(killed), "--train-cache", other, "-q"]) == 2
    assert f"the run trains with --train-cache {cache}" in capsys.readouterr().err
    assert train.main(tiny_argv(killed, **{**flags, "train_cache": other})) == 2
    assert f"data.train_cache: '{cache}' -> '{other}'" in capsys.readouterr().err
    # any other result-changing flag is refused by name, never silently replaced by the stored value
    assert train.main(["--resume", str(killed), "--lr", "0.5", "--max-eval-images", "3", "-q"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "optim.lr" in err and "(given 0.5)" in err and "max_eval_images" in err
    assert train.main(["--resume", str(killed), "--num-workers", "1", "-q"]) == 0

    a, b = load_checkpoint(through), load_checkpoint(killed)
    assert a.final.keys() == b.final.keys()
    assert all(torch.equal(a.final[n], b.final[n]) for n in a.final)
    for log in ("metrics.jsonl", "layers.jsonl"):
        assert (through / log).read_text() == (killed / log).read_text()
    assert (
        json.loads((through / "results.json").read_text())["metrics"]
        == json.loads((killed / "results.json").read_text())["metrics"]
    )


def test_run_directory_files(finished_run):
    run_dir = finished_run
    names = {p.name for p in run_dir.iterdir()}
    assert names == {
        "config.json",
        "log.txt",
        "metrics.jsonl",
        "layers.jsonl",
        "checkpoint.safetensors",
        "checkpoint.json",
        "results.json",
    }
    results = json.loads((run_dir / "results.json").read_text())
    for key in (
        "dataset",
        "setting",
        "shots",
        "seed",
        "recipe",
        "model",
        "pretrained",
        "trainable_params",
        "train_seconds",
        "metrics",
        "zero_shot",
        "signature",
    ):
        assert key in results, key
    assert set(results["metrics"]) == {"base_acc", "new_acc", "hm"} == set(results["zero_shot"])
    assert results["trainable_params"] == 448 and results["comparable"] is False  # eval images were capped
    assert results["signature"].startswith("model:clipfit-tiny|pretrained:")
    # the signature names the protocol and the schedule, so two runs that differ in them never share one
    fields = dict(field.split(":", 1) for field in results["signature"].split("|"))
    assert fields["setting"] == results["setting"] and fields["shots"] == str(results["shots"])
    assert fields["epochs"] == str(results["epochs"]) and fields["lambda"] == f"{results['reg_weight']:g}"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["optim"]["reg_weight"] == 8.0 and {"clipfit", "open_clip", "torch"} <= set(
        config["versions"]
    )
    # A finished checkpoint holds only init/ and final/ tensors of the trained set.
    ckpt = load_checkpoint(run_dir)
    assert ckpt.meta["complete"] and not ckpt.optim and not ckpt.rng
    assert len(ckpt.init) == len(ckpt.final) == 14
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics][-1] == 3 * 4  # 2 shots x 32 base classes / batch 16 = 4 steps per epoch
    assert {"lr", "loss", "ce", "reg", "acc", "epoch"} <= set(metrics[0])
    layers = [json.loads(line) for line in (run_dir / "layers.jsonl").read_text().splitlines()]
    last = [row for row in layers if row["step"] == 12]
    assert {row["name"] for row in last} == set(ckpt.final)
    assert all(row["sq_change"] > 0 and row["grad_sq_cum"] >= row["grad_sq"] for row in last)
    assert "epoch 3/3" in (run_dir / "log.txt").read_text()


def test_finished_runs_are_skipped_and_other_settings_refused(tiny_argv, tmp_path, capsys):
    # its own run: a failure here could rewrite the run
    run_dir = tmp_path / "run"
    assert train.main(tiny_argv(run_dir, **FLAGS)) == 0
    stamp = (run_dir / "results.json").stat().st_mtime_ns
    assert train.main(tiny_argv(run_dir, **FLAGS)) == 0  # same settings: nothing retrained
    assert (run_dir / "results.json").stat().st_mtime_ns == stamp
    capsys.readouterr()
    assert train.main(tiny_argv(run_dir, "--lr", "0.01", **FLAGS)) == 2
    err = capsys.readouterr().err
    assert "already holds a finished run with other settings" in err and "optim.lr" in err and "--overwrite" in err


def test_checkpoint_of_another_architecture_names_the_mismatch(finished_run):
    ckpt = load_checkpoint(finished_run)
    with pytest.raises(CheckpointError, match=r"trained on clipfit-tiny .* but the model is shapes-vit-tiny"):
        build_trained_model(ckpt, model="shapes-vit-tiny", pretrained="none")
    other = build_model("shapes-vit-tiny", "none").model
    with pytest.raises(CheckpointError, match=r"'visual.ln_pre.weight' is \(32,\) in the checkpoint and \(128,\)"):
        apply_checkpoint(other, ckpt)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    bogus = tmp_path / "checkpoint.safetensors"
    bogus.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="is not a clipfit checkpoint"):
        load_checkpoint(bogus)
    with pytest.raises(CheckpointError, match="no clipfit checkpoint"):
        load_checkpoint(tmp_path / "empty-dir")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_keeps_fp32_tensors_and_the_regulariser(train_tiny, tmp_path, precision):
    run_dir, _ = train_tiny(tmp_path / precision, "--precision", precision, "--epochs", "2", **FLAGS)
    ckpt = load_checkpoint(run_dir)
    assert all(t.dtype == torch.float32 for t in ckpt.final.values())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["reg"] > 0  # the released code silently drops it under mixed precision
