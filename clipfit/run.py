"""One run, end to end: resolve the settings, prepare the data, build the model and its head, evaluate
zero-shot, train and evaluate with the recipe's method, and write the run directory.

The pieces live with their owners: the files of a run in :mod:`clipfit.rundir`, the data in
:mod:`clipfit.data.prepare`, the model and head in :mod:`clipfit.models` / :mod:`clipfit.heads`,
training and evaluation in :mod:`clipfit.methods`; this module only puts them in order.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from clipfit.config import RunConfig, resolve
from clipfit.console import format_metrics
from clipfit.data.prepare import RunData, prepare_data
from clipfit.evaluate import zero_shot_metrics
from clipfit.files import check_output_folder
from clipfit.methods import RunContext, method_of
from clipfit.models import ModelBundle, build_model
from clipfit.provenance import signature, versions
from clipfit.recipes import Recipe, apply_recipe, count_parameters, describe_selection, get_recipe, summary_line
from clipfit.rundir import RUN_FILES, RunDir
from clipfit.runtime import (
    DistEnv,
    barrier,
    broadcast_module,
    device_for,
    main_process_first,
    resolve_precision,
    seeded_init,
)

logger = logging.getLogger(__name__)


def build_run_model(cfg: RunConfig, recipe: Recipe, data: RunData | None, device) -> tuple[ModelBundle, list[str]]:
    """The run's model with the recipe's head attached and its tensors selected (the rest frozen).

    Random initialisation (``--pretrained none``, random heads) is a function of the seed, so a
    resumed run and a re-evaluation from the checkpoint start from the same values.
    """
    head = recipe.make_head(cfg.head)
    classnames = list(data.train_subset.classnames) if data is not None else None
    with seeded_init(cfg.seed, device):
        bundle = build_model(cfg.model.name, cfg.model.pretrained, device, cfg.model.quick_gelu)
        head.attach(bundle.model, bundle.tokenizer, classnames)
    bundle.head = head
    return bundle, apply_recipe(bundle.model, recipe)


def describe_model(bundle: ModelBundle) -> str:
    """``model ViT-B-16 (QuickGELU activation), weights: open_clip tag 'openai'``."""
    activation = {"quickgelu": "QuickGELU", "gelu": "GELU"}.get(bundle.activation, bundle.activation)
    return f"model {bundle.name} ({activation} activation), weights: {bundle.source}"


def train_run(
    cfg: RunConfig,
    run_dir: Path,
    *,
    env: DistEnv = DistEnv(),
    overwrite: bool = False,
    dry_run: bool = False,
    resolve_data: bool = True,
) -> dict[str, Any] | None:
    """Train and evaluate one run into ``run_dir``; returns its results (None for a dry run).

    A finished run directory is left alone and its results returned; a partial one (a checkpoint
    but no results) with the same settings is resumed; one with other settings is refused.
    ``overwrite`` clears the run's files first.
    """
    cfg = resolve(cfg)
    run = RunDir(run_dir, writable=env.is_main)
    device = device_for(env, cfg.device)
    precision = resolve_precision(cfg.precision, device)
    if not dry_run:
        check_output_folder(run.path, "the run directory", RUN_FILES)  # before any work, not after training
        run.prepare(cfg, overwrite)
        if run.state == "finished" and not overwrite:
            logger.info("already finished: %s (use --overwrite to train again)", run.path)
            return run.results()

    recipe = get_recipe(cfg.recipe)
    with main_process_first(env):  # the main process writes few-shot draws and random splits, the others read them
        data = prepare_data(cfg) if (resolve_data or not dry_run) else None
    bundle, trained = build_run_model(cfg, recipe, data, device)
    broadcast_module(bundle.model, env)  # random init and random heads: every process starts from rank 0's model
    trainable, total = count_parameters(bundle.model)
    line = summary_line(trainable, total)
    logger.log(logging.DEBUG if dry_run else logging.INFO, describe_model(bundle))  # dry run: only the line
    logger.info(line)
    if dry_run:
        logger.debug(describe_selection(bundle.model, recipe))
    if data is None:
        return None
    logger.info(data.summary())
    if dry_run:
        return None

    if env.is_main:
        if overwrite:
            run.clear()
        run.path.mkdir(parents=True, exist_ok=True)
    barrier()
    resume = run.checkpoint() if run.state == "partial" else None
    sig = signature(bundle.name, bundle.pretrained, cfg.recipe, cfg.data.dataset, cfg.seed, bundle.activation)
    meta = {
        "model": bundle.name,
        "pretrained": bundle.pretrained,
        "activation": bundle.activation,
        "recipe": cfg.recipe,
        "kind": recipe.method,
        "head": bundle.head.describe(),
        "dataset": cfg.data.dataset,
        "setting": cfg.data.setting,
        "shots": cfg.data.shots,
        "seed": cfg.seed,
        "classnames": list(data.train_subset.classnames),
        "template": data.template,
        "signature": sig,
        "versions": versions(),
    }
    ctx = RunContext(cfg, run, recipe, bundle, trained, data, device, precision, env, meta)
    with run.console_log():
        results = _train_and_evaluate(ctx, resume, line, trainable)
    barrier()
    return results


def _train_and_evaluate(ctx: RunContext, resume, line: str, trainable: int) -> dict[str, Any]:
    cfg, bundle, env, run = ctx.cfg, ctx.bundle, ctx.env, ctx.run_dir
    run.write_config(
        {
            "config": cfg.to_dict(),
            "signature": ctx.meta["signature"],
            "activation": bundle.activation,
            "versions": versions(),
            "command": sys.argv,
            "world_size": env.world_size,
            "precision": ctx.precision,
            "device": str(ctx.device),
        }
    )
    logger.info("run directory: %s", run.path)
    logger.info("%s on %s", ctx.precision, ctx.device)

    if resume is not None and "zero_shot" in resume.meta:
        zero_shot = resume.meta["zero_shot"]
    else:
        started = time.time()
        zero_shot = zero_shot_metrics(ctx.bundle, ctx.data, ctx.eval_settings)
        logger.info("zero-shot: %s (%.1fs)", format_metrics(zero_shot), time.time() - started)
    ctx.meta["zero_shot"] = zero_shot

    outcome = method_of(ctx.recipe).run(ctx, resume, zero_shot)
    logger.info("%s: %s", cfg.recipe, format_metrics(outcome.metrics))
    results = {
        "dataset": cfg.data.dataset,
        "setting": cfg.data.setting,
        "shots": cfg.data.shots,
        "seed": cfg.seed,
        "recipe": cfg.recipe,
        "model": bundle.name,
        "pretrained": bundle.pretrained,
        "activation": bundle.activation,
        "trainable_params": trainable,
        "trainable_summary": line,
        "train_seconds": round(outcome.train_seconds, 2),
        "metrics": outcome.metrics,
        "zero_shot": zero_shot,
        "epochs": outcome.epochs,
        "lr": cfg.optim.lr,
        "reg_weight": cfg.optim.reg_weight,
        "head": bundle.head.describe(),
        "template": ctx.data.template,
        "split_source": ctx.data.dataset.split_source,
        "comparable": ctx.data.dataset.comparable and cfg.max_eval_images is None,
        **({"bad_images": [b.to_json() for b in ctx.data.bad_images]} if ctx.data.bad_images else {}),
        "precision": ctx.precision,
        "world_size": env.world_size,
        "signature": ctx.meta["signature"],
        "versions": versions(),
        **outcome.extra,
    }
    run.write_results(results)
    return results
