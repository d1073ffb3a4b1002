"""How a recipe trains and evaluates: gradient fine-tuning, no training (zero-shot), or a linear probe.

A recipe names its method (:attr:`clipfit.recipes.Recipe.method`); :mod:`clipfit.run` looks it up
here and calls :meth:`Method.run`, which trains, evaluates the run's own test set and leaves the
finished checkpoint in the run directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from clipfit.checkpoint import Checkpoint
from clipfit.config import RunConfig
from clipfit.data.loaders import workers_for
from clipfit.data.prepare import RunData
from clipfit.data.sampling import ClassSubset
from clipfit.engine import Trainer, TrainSettings, TrainTask
from clipfit.evaluate import EvalSettings, evaluate_subsets, subset_accuracy
from clipfit.linear_probe import evaluate_linear_probe, fit_linear_probe
from clipfit.models import ModelBundle
from clipfit.recipes import Recipe
from clipfit.rundir import METRICS_FILE, RunDir, read_jsonl
from clipfit.runtime import DistEnv


@dataclass
class RunContext:
    """Everything one run needs once its model and data are built."""

    cfg: RunConfig  # resolved settings
    run_dir: RunDir
    recipe: Recipe
    bundle: ModelBundle  # the model with the recipe's head attached (bundle.head)
    trained: list[str]  # trained tensor names, in model order
    data: RunData
    device: torch.device
    precision: str
    env: DistEnv
    meta: dict[str, Any]  # the checkpoint metadata of the run (model, recipe, head, class names, ...)
    sinks: list[Any] = field(default_factory=list)  # experiment trackers fed each metrics row (clipfit.tracking)

    @property
    def eval_settings(self) -> EvalSettings:
        return EvalSettings.of(self.cfg, self.device, self.precision, self.env)


@dataclass
class Outcome:
    """What a method's run produced, for results.json."""

    train_seconds: float
    metrics: dict[str, float | None]  # the run's own test set (Base/New/HM or Acc)
    epochs: int = 0  # gradient epochs trained
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific results (e.g. the probe's C search)


class Method:
    """Trains a recipe's tensors and evaluates the result."""

    name: ClassVar[str]
    # why the model cannot classify another dataset's classes ({dataset}: the run's dataset); None: it can
    transfer_refusal: ClassVar[str | None] = None

    def run(self, ctx: RunContext, resume: Checkpoint | None, zero_shot: dict[str, float]) -> Outcome:
        """Train, evaluate on the run's test set and write the finished checkpoint (main process)."""
        raise NotImplementedError

    def evaluate(self, bundle: ModelBundle, data: RunData, settings: EvalSettings) -> dict[str, float | None]:
        """The run's own evaluation: its test set over the setting's label spaces, through the head."""
        return evaluate_subsets(bundle, data.dataset, data.subsets, data.template, settings, bundle.head)


class ZeroShot(Method):
    name = "zero-shot"

    def run(self, ctx: RunContext, resume: Checkpoint | None, zero_shot: dict[str, float]) -> Outcome:
        ctx.run_dir.save_checkpoint({}, {}, {**ctx.meta, "complete": True})
        return Outcome(0.0, zero_shot)


class FineTune(Method):
    name = "finetune"

    def run(self, ctx: RunContext, resume: Checkpoint | None, zero_shot: dict[str, float]) -> Outcome:
        data, cfg = ctx.data, ctx.cfg
        task = TrainTask(
            data.train, data.train_subset.classnames, data.template, data.dataset.reader, data.dataset.train_crop_scale,
            cfg.data.train_cache,
        )  # fmt: skip
        settings = TrainSettings.of(cfg, ctx.device, ctx.precision, workers_for(cfg.data.num_workers, data.dataset))
        validate = self.validation(ctx) if settings.val_every and data.val else None
        trainer = Trainer(
            ctx.bundle,
            ctx.trained,
            task,
            settings,
            env=ctx.env,
            run_dir=ctx.run_dir,
            checkpoint_meta=ctx.meta,
            sinks=ctx.sinks,
            validate=validate,
        )
        train_seconds = trainer.fit(resume=resume).train_seconds
        metrics = self.evaluate(ctx.bundle, data, ctx.eval_settings)
        extra = {"validation": validation_summary(ctx.run_dir)} if validate is not None and ctx.env.is_main else {}
        if ctx.env.is_main:
            # The finished checkpoint keeps only init/ and final/ (no optimizer or generator state).
            ckpt = ctx.run_dir.checkpoint()
            meta = {k: v for k, v in ckpt.meta.items() if k not in ("format", "trained", "grad_sq_cum")}
            meta.update(complete=True, metrics=metrics, train_seconds=round(train_seconds, 2))
            ctx.run_dir.save_checkpoint(ckpt.init, ckpt.final, meta)
        return Outcome(train_seconds, metrics, epochs=cfg.optim.epochs, extra=extra)

    @staticmethod
    def validation(ctx: RunContext) -> Callable[[], float]:
        """The accuracy on the run's few-shot val images (already in the training label space), through the head."""
        data, bundle, settings = ctx.data, ctx.bundle, ctx.eval_settings
        space = data.train_subset
        identity = ClassSubset(space.name, tuple(range(len(space.classnames))), space.classnames)
        return lambda: subset_accuracy(
            bundle.model,
            bundle.tokenizer,
            identity,
            data.template,
            data.val,
            data.dataset.reader,
            bundle.preprocess,
            settings.device,
            precision=settings.precision,
            batch_size=settings.batch_size,
            num_workers=settings.workers(data.dataset),
            env=settings.env,
            head=bundle.head,
        )


def validation_summary(run_dir: RunDir) -> dict[str, Any]:
    """results.json's ``validation``: the last and the best validation accuracy, and the best one's epoch
    (1-based), from the ``val_acc`` rows of metrics.jsonl (all of them, also those of earlier attempts)."""
    rows = [r for r in read_jsonl(run_dir.file(METRICS_FILE)) if r.get("val_acc") is not None]
    if not rows:
        return {}
    best = max(rows, key=lambda r: r["val_acc"])
    return {
        "last_acc": rows[-1]["val_acc"],
        "best_acc": best["val_acc"],
        "best_epoch": best["epoch"] + 1,
        "epochs": [r["epoch"] + 1 for r in rows],
        "note": "the run keeps its last epoch's values (the paper's protocol); validation only reports",
    }


class LinearProbe(Method):
    name = "linear-probe"
    transfer_refusal = (
        "its classifier is tied to the {dataset} classes it was fitted on and cannot classify another dataset's; "
        "evaluate a fine-tuned recipe on other datasets"
    )

    def run(self, ctx: RunContext, resume: Checkpoint | None, zero_shot: dict[str, float]) -> Outcome:
        params = dict(ctx.bundle.model.named_parameters())
        init = {n: params[n].detach().clone() for n in ctx.trained}
        started = time.time()
        probe = fit_linear_probe(ctx.bundle, ctx.data, ctx.eval_settings, ctx.cfg.seed)
        train_seconds = time.time() - started
        metrics = self.evaluate(ctx.bundle, ctx.data, ctx.eval_settings)
        final = {n: params[n] for n in ctx.trained}
        ctx.run_dir.save_checkpoint(init, final, {**ctx.meta, "probe": probe, "complete": True})
        return Outcome(train_seconds, metrics, extra={"probe": probe})

    def evaluate(self, bundle: ModelBundle, data: RunData, settings: EvalSettings) -> dict[str, float | None]:
        return evaluate_linear_probe(bundle, data, settings)


METHODS: dict[str, Method] = {m.name: m for m in (FineTune(), ZeroShot(), LinearProbe())}


def method_of(recipe: Recipe) -> Method:
    """The method a recipe trains with."""
    return METHODS[recipe.method]
