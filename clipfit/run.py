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
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from clipfit.config import RunConfig, resolve
from clipfit.console import format_metrics
from clipfit.data.prepare import RunData, prepare_data
from clipfit.errors import ClipfitError
from clipfit.evaluate import zero_shot_metrics
from clipfit.files import check_output_folder
from clipfit.methods import RunContext, method_of
from clipfit.models import ModelBundle, build_model, to_half
from clipfit.provenance import signature, versions
from clipfit.recipes import Recipe, apply_recipe, count_parameters, describe_selection, get_recipe, summary_line
from clipfit.reference import self_check
from clipfit.rundir import RUN_FILES, RunDir
from clipfit.runlock import RunLockedError
from clipfit.runtime import (
    DistEnv,
    barrier,
    broadcast_module,
    broadcast_object,
    device_for,
    main_process_first,
    resolve_precision,
    seeded_init,
)
from clipfit.tracking import close_sinks, open_sinks

logger = logging.getLogger(__name__)


def build_run_model(
    cfg: RunConfig, recipe: Recipe, data: RunData | None, device, precision: str = "fp32"
) -> tuple[ModelBundle, list[str]]:
    """The run's model with the recipe's head attached and its tensors selected (the rest frozen).

    Random initialisation (``--pretrained none``, random heads) is a function of the seed, so a
    resumed run and a re-evaluation from the checkpoint start from the same values.
    """
    head = recipe.make_head(cfg.head)
    classnames = list(data.train_subset.classnames) if data is not None else None
    with seeded_init(cfg.seed, device):
        bundle = build_model(cfg.model.name, cfg.model.pretrained, device, cfg.model.quick_gelu)
        head.attach(bundle.model, bundle.tokenizer, classnames)
    if precision == "half":
        to_half(bundle.model)
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
    report_to: Sequence[str] = (),
) -> dict[str, Any] | None:
    """Train and evaluate one run into ``run_dir``; returns its results (None for a dry run).

    A finished run directory is left alone and its results returned; a partial one (a checkpoint
    but no results) with the same settings is resumed; one with other settings is refused.
    ``overwrite`` clears the run's files first. The run holds the folder's lock throughout, so a
    second run into the same folder stops while this one lives. ``report_to`` names experiment
    trackers (:mod:`clipfit.tracking`) that get the metrics rows too.
    """
    cfg = resolve(cfg)
    run = RunDir(run_dir, writable=env.is_main)
    if dry_run:
        return _build_and_train(cfg, run, env, overwrite, dry_run, resolve_data, report_to)
    check_output_folder(run.path, "the run directory", RUN_FILES)  # before any work, not after training
    with _locked(run, env):
        run.prepare(cfg, overwrite)
        if run.state == "finished" and not overwrite:
            logger.info("already finished: %s (use --overwrite to train again)", run.path)
            return run.results()
        return _build_and_train(cfg, run, env, overwrite, dry_run, resolve_data, report_to)


@contextmanager
def _locked(run: RunDir, env: DistEnv) -> Iterator[None]:
    """The run directory's lock around the body: rank 0 takes it, and every process learns whether it got it
    (so no process waits in a collective for one that stopped)."""
    error: ClipfitError | None = None
    with ExitStack() as stack:
        if env.is_main:
            try:
                stack.enter_context(run.locked())
            except ClipfitError as exc:
                error = exc
        message = broadcast_object(str(error) if error is not None else None, env)
        if error is not None:
            raise error
        if message is not None:
            raise RunLockedError(message)
        yield


def _build_and_train(
    cfg: RunConfig,
    run: RunDir,
    env: DistEnv,
    overwrite: bool,
    dry_run: bool,
    resolve_data: bool,
    report_to: Sequence[str] = (),
) -> dict[str, Any] | None:
    device = device_for(env, cfg.device)
    precision = resolve_precision(cfg.precision, device)
    recipe = get_recipe(cfg.recipe)
    with main_process_first(env):  # the main process writes few-shot draws and random splits, the others read them
        data = prepare_data(cfg) if (resolve_data or not dry_run) else None
    bundle, trained = build_run_model(cfg, recipe, data, device, precision)
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
    sig = signature(
        bundle.name, bundle.pretrained, cfg.recipe, cfg.data.dataset, cfg.seed, bundle.activation,
        setting=cfg.data.setting, shots=cfg.data.shots, epochs=cfg.optim.epochs, reg_weight=cfg.optim.reg_weight,
    )  # fmt: skip
    meta = {
        "model": bundle.name,
        "pretrained": bundle.pretrained,
        "activation": bundle.activation,
        "precision": precision,
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
    if env.is_main and report_to:
        ctx.sinks = open_sinks(report_to, run.path, {**cfg.to_dict(), "signature": sig}, _tracker_name(run.path, cfg))
    results = None
    try:
        with run.console_log():
            results = _train_and_evaluate(ctx, resume, line, trainable)
    finally:
        close_sinks(ctx.sinks, results["metrics"] if results else None)
    barrier()
    return results


def _tracker_name(path: Path, cfg: RunConfig) -> str:
    """How a run is called in an experiment tracker: the last five parts of its default run directory."""
    return "/".join(path.parts[-5:]) if len(path.parts) >= 5 else f"{cfg.data.dataset}/{cfg.recipe}/seed{cfg.seed}"


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
        zero_shot, published = resume.meta["zero_shot"], resume.meta.get("zero_shot_published")
    else:
        zero_shot, published = _zero_shot(ctx)
    ctx.meta["zero_shot"] = zero_shot
    if published is not None:
        ctx.meta["zero_shot_published"] = published
    comparable = ctx.data.dataset.comparable and cfg.max_eval_images is None
    check = self_check(
        bundle.name, bundle.pretrained, bundle.activation, cfg.data.dataset, cfg.data.setting, comparable,
        (published or {"metrics": zero_shot})["metrics"], ctx.data.published_template,
    )  # fmt: skip

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
        "comparable": comparable,
        **({"bad_images": [b.to_json() for b in ctx.data.bad_images]} if ctx.data.bad_images else {}),
        "precision": ctx.precision,
        "world_size": env.world_size,
        "signature": ctx.meta["signature"],
        "versions": versions(),
        **({"zero_shot_published": published} if published is not None else {}),
        **({"self_check": check} if check is not None else {}),
        **outcome.extra,
    }
    run.write_results(results)
    return results


def _zero_shot(ctx: RunContext) -> tuple[dict[str, float], dict[str, Any] | None]:
    """Zero-shot CLIP with the fine-tuning template (the run's starting point) and, where the dataset's
    published numbers use another template (CoOp's ZeroshotCLIP: DTD), under that published protocol."""
    data, settings = ctx.data, ctx.eval_settings
    started = time.time()
    zero_shot = zero_shot_metrics(ctx.bundle, data, settings)
    logger.info("zero-shot: %s (%.1fs)", format_metrics(zero_shot), time.time() - started)
    if data.published_template == data.template:
        return zero_shot, None
    metrics = zero_shot_metrics(ctx.bundle, data, settings, data.published_template)
    logger.info("zero-shot with the published template %r: %s", data.published_template, format_metrics(metrics))
    return zero_shot, {"template": data.published_template, "metrics": metrics}
