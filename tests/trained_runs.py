"""Run directories of clipfit-tiny as clipfit-train leaves them, written without training (for the API tests).

The trained tensors are the pretrained ones plus seeded noise, so a model loaded back differs from the
pretrained one in exactly those tensors; the checkpoint metadata, results.json and config.json carry
what a real run records. Images: shapes-world test images as PNG files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from clipfit.checkpoint import write_checkpoint
from clipfit.config import RunConfig
from clipfit.data import shapes
from clipfit.models import build_model
from clipfit.provenance import signature, versions
from clipfit.recipes import apply_recipe, get_recipe
from clipfit.runtime import seeded_init

CLASSNAMES = ["red circle", "green circle", "blue square", "yellow star"]
TEMPLATE = "a photo of a {}."
METRICS = {"base_acc": 61.0, "new_acc": 52.0, "hm": 56.14}
ZERO_SHOT = {"base_acc": 41.0, "new_acc": 43.5, "hm": 42.21}


def fake_run(
    run_dir: Path, weights: str, recipe: str = "clipfit", quick_gelu: bool | None = None, noise: float = 0.2
) -> Path:
    """A finished clipfit-tiny run of ``recipe`` in ``run_dir`` (base weights: the file ``weights``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    head = get_recipe(recipe).make_head({})
    with seeded_init(1, "cpu"):
        bundle = build_model("clipfit-tiny", weights, "cpu", quick_gelu)
        head.attach(bundle.model, bundle.tokenizer, CLASSNAMES)
    trained = apply_recipe(bundle.model, recipe)
    params = dict(bundle.model.named_parameters())
    init = {n: params[n].detach().clone() for n in trained}
    generator = torch.Generator().manual_seed(7)
    final = {n: v + noise * torch.randn(v.shape, generator=generator) for n, v in init.items()}
    sig = signature("clipfit-tiny", weights, recipe, "shapes", 1, bundle.activation)
    record = {"dataset": "shapes", "setting": "base2new", "shots": 2, "seed": 1, "recipe": recipe}
    meta = {
        "model": "clipfit-tiny",
        "pretrained": weights,
        "activation": bundle.activation,
        "precision": "fp32",
        **record,
        "kind": get_recipe(recipe).method,
        "head": head.describe(),
        "classnames": CLASSNAMES,
        "template": TEMPLATE,
        "signature": sig,
        "versions": versions(),
        "complete": True,
        "epoch": 3,
        "metrics": METRICS,
        "zero_shot": ZERO_SHOT,
    }
    write_checkpoint(run_dir / "checkpoint.safetensors", init, final, meta, mirror=run_dir / "checkpoint.json")
    results = {**record, "model": "clipfit-tiny", "pretrained": weights, "metrics": METRICS, "zero_shot": ZERO_SHOT,
               "signature": sig, "template": TEMPLATE, "comparable": True, "epochs": 3, "lr": 0.002}  # fmt: skip
    (run_dir / "results.json").write_text(json.dumps(results))
    cfg = RunConfig()
    cfg.model.name, cfg.model.pretrained, cfg.recipe = "clipfit-tiny", weights, recipe
    command = ["clipfit-train", "--model", "clipfit-tiny", "--recipe", recipe, "--run-dir", str(run_dir)]
    (run_dir / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "command": command}))
    return run_dir


def shapes_pngs(folder: Path, count: int = 6) -> list[Path]:
    """``count`` shapes-world test images as PNG files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"shape{i}.png"
        shapes.read_image(f"target/test/{i * 41:05d}").save(path)
        paths.append(path)
    return paths
