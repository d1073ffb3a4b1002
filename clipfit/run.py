"""One run, end to end: resolve settings, build the model, draw the data, evaluate zero-shot,
train, evaluate, and write the run directory (see README "Run directory")."""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch

import clipfit
from clipfit.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    apply_checkpoint,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from clipfit.config import RunConfig, resolve
from clipfit.data.base import Dataset, Sample
from clipfit.data.loaders import workers_for
from clipfit.data.registry import dataset_slug, get_spec, load_dataset
from clipfit.data.sampling import ClassSubset, class_subsets, draw_few_shot
from clipfit.engine import LAYERS_FILE, METRICS_FILE, Trainer, TrainTask
from clipfit.errors import ClipfitError
from clipfit.evaluate import cap_samples, subset_accuracy, summarise
from clipfit.heads import ClipHead, attach_probe, head_from_meta, make_head
from clipfit.linear_probe import evaluate_linear_probe, fit_linear_probe
from clipfit.models import ModelBundle, build_model
from clipfit.prompts import check_template
from clipfit.recipes import Recipe, apply_recipe, count_parameters, get_recipe, summary_line
from clipfit.runtime import DistEnv, barrier, broadcast_module, device_for, main_process_first, resolve_precision

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
LOG_FILE = "log.txt"
# Settings that change how fast a run goes or how it logs, never its results.
_RUN_FILES = (
    CONFIG_FILE, RESULTS_FILE, LOG_FILE, METRICS_FILE, LAYERS_FILE, CHECKPOINT_FILE, "checkpoint.json",
)  # fmt: skip
_RESULT_NEUTRAL = {
    ("device",), ("eval_batch_size",), ("data", "num_workers"), ("log_every",), ("compile",), ("grad_checkpointing",),
    ("checkpoint_every",),
}  # fmt: skip


class RunError(ClipfitError, RuntimeError):
    """A run directory is in a state that would lose data or mix two runs."""


def versions() -> dict[str, str]:
    return {
        "clipfit": clipfit.__version__,
        "open_clip": open_clip.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def signature(model: str, pretrained: str, recipe: str, dataset: str, seed: int | str) -> str:
    """``model:ViT-B-16|pretrained:openai|recipe:clipfit|dataset:dtd|seed:1|version:0.1.0``."""
    return (
        f"model:{model}|pretrained:{pretrained}|recipe:{recipe}|dataset:{dataset}|seed:{seed}"
        f"|version:{clipfit.__version__}"
    )


def default_run_dir(out: str | Path, cfg: RunConfig) -> Path:
    """``<out>/<dataset>/<setting>/<recipe>/shots<K>/seed<S>``."""
    dataset = dataset_slug(cfg.data.dataset)
    return Path(out) / dataset / cfg.data.setting / cfg.recipe / f"shots{cfg.data.shots}" / f"seed{cfg.seed}"


@dataclass
class RunData:
    """The data of a run: the dataset, its few-shot draw, and the label spaces."""

    dataset: Dataset
    template: str
    train: list[Sample]  # few-shot train images, relabelled to the training label space
    val: list[Sample]  # few-shot val images, relabelled likewise
    subsets: dict[str, ClassSubset]  # "base"/"new" or "all"
    train_subset: ClassSubset  # the label space training uses ("base" or "all")

    def summary(self) -> str:
        spaces = ", ".join(f"{k}: {len(v.labels)} classes" for k, v in self.subsets.items())
        return (
            f"data: {self.dataset.summary()}; few-shot draw: {len(self.train)} train / {len(self.val)} val; "
            f"{spaces}; template {self.template!r}"
        )


def prepare_data(cfg: RunConfig) -> RunData:
    """Load the dataset, draw the seed's few-shot subsets (Dassl's algorithm) and split the classes.

    The draw is saved as ``split_fewshot/shot_<K>-seed_<S>.json`` (or read from it), see
    :func:`clipfit.data.sampling.draw_few_shot`.
    """
    spec = get_spec(cfg.data.dataset)
    if spec.test_only:
        raise RunError(f"dataset '{spec.name}' is test-only; train on another and evaluate with clipfit-eval")
    dataset = load_dataset(
        cfg.data.dataset, cfg.data.data_root, make_split=cfg.data.make_split, classnames=cfg.data.classnames
    )
    if not dataset.train:
        raise RunError(f"dataset '{dataset.name}' has no training images ({dataset.split_source})")
    template = check_template(cfg.data.template or dataset.template)
    draw = draw_few_shot(dataset, cfg.data.shots, cfg.seed)
    few_train, few_val = draw.train, draw.val
    subsets = class_subsets(dataset, few_train, cfg.data.setting)
    train_subset = subsets["base"] if cfg.data.setting == "base2new" else subsets["all"]
    return RunData(
        dataset, template, train_subset.relabel(few_train), train_subset.relabel(few_val), subsets, train_subset
    )


def evaluate_subsets(
    bundle: ModelBundle,
    dataset: Dataset,
    subsets: dict[str, ClassSubset],
    template: str,
    cfg: RunConfig,
    device: torch.device,
    precision: str,
    env: DistEnv,
    head: ClipHead | None = None,
) -> dict[str, float]:
    """Accuracy on the test images of every label space (Base/New/HM or Acc), in percent."""
    workers = workers_for(cfg.data.num_workers, dataset)
    accuracies = {}
    for name, subset in subsets.items():
        wanted = set(subset.labels)
        test = cap_samples([s for s in dataset.test if s.label in wanted], cfg.max_eval_images)
        accuracies[name] = subset_accuracy(
            bundle.model,
            bundle.tokenizer,
            subset,
            template,
            test,
            dataset.reader,
            bundle.preprocess,
            device,
            precision=precision,
            batch_size=cfg.eval_batch_size,
            num_workers=workers,
            env=env,
            head=head,
        )
    return summarise(accuracies)


def evaluate_run(
    bundle: ModelBundle, data: RunData, cfg: RunConfig, device: torch.device, precision: str, env: DistEnv
) -> dict[str, float]:
    """The run's own evaluation: its dataset's test set over the setting's label spaces, through the
    head a trained model carries (see :func:`build_trained_model`)."""
    if hasattr(bundle.model, "probe"):
        return evaluate_linear_probe(bundle, data, cfg, device, precision, env)
    head = bundle.head
    return evaluate_subsets(bundle, data.dataset, data.subsets, data.template, cfg, device, precision, env, head)


def _flatten(d: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out


def _config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    return [
        f"{'.'.join(k)}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if k not in _RESULT_NEUTRAL and a.get(k) != b.get(k)
    ]


def run_state(run_dir: Path) -> str:
    """``finished`` (results.json), ``partial`` (a checkpoint, no results), or ``new``."""
    if (run_dir / RESULTS_FILE).is_file():
        return "finished"
    if (run_dir / CHECKPOINT_FILE).is_file():
        return "partial"
    return "new"


def read_results(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / RESULTS_FILE).read_text())


def _attach_log_file(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    logging.getLogger("clipfit").addHandler(handler)
    return handler


@contextlib.contextmanager
def seeded_init(seed: int | None, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed torch's global generators for building a model and attaching its head, then put them back.

    Random initialisation (``--pretrained none``, CoOp's random context, CLIP-Adapter's first layer)
    is then the same in a run, its resumption and its re-evaluation from the checkpoint, and
    training's own random streams are untouched.
    """
    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0 if seed is None else int(seed))
        yield


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
    run_dir = Path(run_dir)
    device = device_for(env, cfg.device)
    precision = resolve_precision(cfg.precision, device)
    if not dry_run:
        state = run_state(run_dir)
        if state != "new" and not overwrite:
            old = (
                json.loads((run_dir / CONFIG_FILE).read_text()).get("config", {})
                if (run_dir / CONFIG_FILE).exists()
                else {}
            )
            if old:  # settings added in later versions take their defaults, not "changed"
                old = RunConfig.from_dict(old).to_dict()
            diff = _config_differences(old, cfg.to_dict())
            if diff:
                raise RunError(
                    f"{run_dir} already holds a {state} run with other settings ({'; '.join(diff)}). "
                    "Use another --out, or --overwrite to replace it."
                )
            if state == "finished":
                logger.info("already finished: %s (use --overwrite to train again)", run_dir)
                return read_results(run_dir)

    recipe = get_recipe(cfg.recipe)
    head = make_head(recipe.head, cfg.head)
    with seeded_init(cfg.seed, device):  # random weights and heads are a function of the seed: resumable
        bundle = build_model(cfg.model.name, cfg.model.pretrained, device)
        head.attach(bundle.model, bundle.tokenizer)
    with main_process_first(env):  # the main process writes few-shot draws and random splits, the others read them
        data = prepare_data(cfg) if (resolve_data or not dry_run) else None
    if recipe.kind == "linear-probe" and data is not None:
        attach_probe(bundle.model, len(data.train_subset.classnames))
    trained = apply_recipe(bundle.model, recipe)
    broadcast_module(bundle.model, env)  # random init and random heads: every process starts from rank 0's model
    trainable, total = count_parameters(bundle.model)
    line = summary_line(trainable, total)
    logger.info(line)
    if data is None:
        return None
    logger.info(data.summary())
    if dry_run:
        return None

    if env.is_main:
        if overwrite:
            for name in _RUN_FILES:
                (run_dir / name).unlink(missing_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier()
    resume = load_checkpoint(run_dir) if run_state(run_dir) == "partial" else None
    run = _Run(cfg, run_dir, recipe, bundle, head, trained, line, trainable, data, device, precision, env)
    handler = _attach_log_file(run_dir) if env.is_main else None
    try:
        return _train_and_evaluate(run, resume)
    finally:
        if handler is not None:
            logging.getLogger("clipfit").removeHandler(handler)
            handler.close()


@dataclass
class _Run:
    """Everything one run needs once its model and data are built."""

    cfg: RunConfig
    run_dir: Path
    recipe: Recipe
    bundle: ModelBundle
    head: ClipHead
    trained: list[str]
    line: str  # the standard trainable-params line
    trainable: int
    data: RunData
    device: torch.device
    precision: str
    env: DistEnv

    def evaluate(self, head: ClipHead) -> dict[str, float]:
        d = self.data
        return evaluate_subsets(
            self.bundle, d.dataset, d.subsets, d.template, self.cfg, self.device, self.precision, self.env, head
        )


def _train_and_evaluate(run: _Run, resume: Checkpoint | None) -> dict[str, Any]:
    cfg, bundle, env = run.cfg, run.bundle, run.env
    sig = signature(bundle.name, bundle.pretrained, cfg.recipe, cfg.data.dataset, cfg.seed)
    if env.is_main:
        config = {
            "config": cfg.to_dict(),
            "signature": sig,
            "versions": versions(),
            "command": sys.argv,
            "world_size": env.world_size,
            "precision": run.precision,
            "device": str(run.device),
        }
        atomic_write_text(run.run_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    logger.info("run directory: %s", run.run_dir)
    logger.info("model %s, weights: %s; %s on %s", bundle.name, bundle.source, run.precision, run.device)

    if resume is not None and "zero_shot" in resume.meta:
        zero_shot = resume.meta["zero_shot"]
    else:
        started = time.time()
        zero_shot = run.evaluate(ClipHead())  # CLIP itself, whatever the recipe adds
        logger.info("zero-shot: %s (%.1fs)", format_metrics(zero_shot), time.time() - started)

    meta = {
        "model": bundle.name,
        "pretrained": bundle.pretrained,
        "recipe": cfg.recipe,
        "kind": run.recipe.kind,
        "head": run.head.describe(),
        "dataset": cfg.data.dataset,
        "setting": cfg.data.setting,
        "shots": cfg.data.shots,
        "seed": cfg.seed,
        "classnames": list(run.data.train_subset.classnames),
        "template": run.data.template,
        "signature": sig,
        "versions": versions(),
        "zero_shot": zero_shot,
    }
    probe: dict[str, Any] = {}
    started = time.time()
    if run.recipe.kind == "zero-shot":
        train_seconds, metrics = 0.0, zero_shot
        if env.is_main:
            save_checkpoint(run.run_dir, {}, {}, {**meta, "complete": True})
    elif run.recipe.kind == "linear-probe":
        params = dict(bundle.model.named_parameters())
        init = {n: params[n].detach().clone() for n in run.trained}
        probe = fit_linear_probe(bundle, run.data, cfg, run.device, run.precision, env)
        train_seconds = time.time() - started
        metrics = evaluate_linear_probe(bundle, run.data, cfg, run.device, run.precision, env)
        if env.is_main:
            final = {n: params[n] for n in run.trained}
            save_checkpoint(run.run_dir, init, final, {**meta, "probe": probe, "complete": True})
    else:
        task = TrainTask(
            run.data.train,
            run.data.train_subset.classnames,
            run.data.template,
            run.data.dataset.reader,
            run.data.dataset.train_crop_scale,
        )
        trainer = Trainer(
            bundle.model, run.trained, bundle.tokenizer, bundle.preprocess, task, cfg.optim,
            seed=cfg.seed, device=run.device, precision=run.precision, env=env, run_dir=run.run_dir,
            log_every=cfg.log_every, num_workers=workers_for(cfg.data.num_workers, run.data.dataset),
            checkpoint_meta=meta, head=run.head, compile=cfg.compile, grad_checkpointing=cfg.grad_checkpointing,
            checkpoint_every=cfg.checkpoint_every,
        )  # fmt: skip
        train_seconds = trainer.fit(resume=resume).train_seconds
        metrics = run.evaluate(run.head)
    logger.info("%s: %s", cfg.recipe, format_metrics(metrics))
    results = {
        "dataset": cfg.data.dataset,
        "setting": cfg.data.setting,
        "shots": cfg.data.shots,
        "seed": cfg.seed,
        "recipe": cfg.recipe,
        "model": bundle.name,
        "pretrained": bundle.pretrained,
        "trainable_params": run.trainable,
        "trainable_summary": run.line,
        "train_seconds": round(train_seconds, 2),
        "metrics": metrics,
        "zero_shot": zero_shot,
        "epochs": cfg.optim.epochs if run.recipe.kind == "finetune" else 0,
        "lr": cfg.optim.lr,
        "reg_weight": cfg.optim.reg_weight,
        "head": run.head.describe(),
        "template": run.data.template,
        "split_source": run.data.dataset.split_source,
        "comparable": run.data.dataset.comparable and cfg.max_eval_images is None,
        "precision": run.precision,
        "world_size": env.world_size,
        "signature": sig,
        "versions": versions(),
        **({"probe": probe} if probe else {}),
    }
    if env.is_main:
        if run.recipe.kind == "finetune":
            # The finished checkpoint keeps only init/ and final/ (no optimizer or generator state).
            ckpt = load_checkpoint(run.run_dir)
            final_meta = {k: v for k, v in ckpt.meta.items() if k not in ("format", "trained", "grad_sq_cum")}
            final_meta.update(complete=True, metrics=metrics, train_seconds=results["train_seconds"])
            save_checkpoint(run.run_dir, ckpt.init, ckpt.final, final_meta)
        atomic_write_text(run.run_dir / RESULTS_FILE, json.dumps(results, indent=2) + "\n")
    barrier()
    return results


def _fmt(value: float | None, width: int = 0) -> str:
    return f"{value:{width}.2f}" if value is not None else f"{'n/a':>{width}}"


def format_metrics(metrics: dict[str, float | None], width: int = 0) -> str:
    """``base 65.08 new 62.58 HM 63.80`` or ``acc 71.20`` (n/a where a metric does not apply)."""
    if "acc" in metrics:
        return f"acc {_fmt(metrics['acc'], width)}"
    parts = (("base", "base_acc"), ("new", "new_acc"), ("HM", "hm"))
    return "  ".join(f"{label} {_fmt(metrics[key], width)}" for label, key in parts)


def results_table(results: dict[str, Any]) -> str:
    """The zero-shot vs fine-tuned table of one run, as printed at the end of clipfit-train."""
    zs, ft = results["zero_shot"], results["metrics"]
    keys = [("base_acc", "Base"), ("new_acc", "New"), ("hm", "HM")] if "base_acc" in ft else [("acc", "Acc")]
    width = max(len("zero-shot"), len(results["recipe"])) + 2
    rows = [" " * width + "".join(f"{title:>8}" for _, title in keys)]
    named = [("zero-shot", zs)] + ([(results["recipe"], ft)] if results["recipe"] != "zero-shot" else [])
    for label, values in named:
        rows.append(f"{label:<{width}}" + "".join(_fmt(values[k], 8) for k, _ in keys))
    return "\n".join(rows)


def load_run(run_dir: str | Path) -> tuple[RunConfig, Checkpoint]:
    """The settings and checkpoint of a clipfit-train run directory."""
    run_dir = Path(run_dir).expanduser()
    ckpt = load_checkpoint(run_dir)
    config_file = (run_dir if run_dir.is_dir() else run_dir.parent) / CONFIG_FILE
    if config_file.is_file():
        cfg = RunConfig.from_dict(json.loads(config_file.read_text())["config"])
    else:  # a bare checkpoint file: rebuild what matters from its metadata
        cfg = RunConfig()
        cfg.model.name, cfg.model.pretrained = ckpt.meta.get("model"), ckpt.meta.get("pretrained")
        cfg.recipe = ckpt.meta.get("recipe", cfg.recipe)
        cfg.data.dataset = ckpt.meta.get("dataset", cfg.data.dataset)
        cfg.data.setting = ckpt.meta.get("setting", cfg.data.setting)
        cfg.data.shots, cfg.seed = ckpt.meta.get("shots", cfg.data.shots), ckpt.meta.get("seed", cfg.seed)
    return cfg, ckpt


def build_trained_model(
    ckpt: Checkpoint,
    device: torch.device | str = "cpu",
    which: str = "final",
    model: str | None = None,
    pretrained: str | None = None,
) -> ModelBundle:
    """The checkpoint's model with its ``final`` (or ``init``) tensors in place.

    ``model``/``pretrained`` override the recorded ones (e.g. when the pretrained file moved);
    an architecture the checkpoint does not fit is refused with the mismatch named.
    """
    head = head_from_meta(ckpt.meta.get("head"))
    with seeded_init(ckpt.meta.get("seed"), device):  # the same random init as the run (--pretrained none)
        bundle = build_model(model or ckpt.meta["model"], pretrained or ckpt.meta["pretrained"], device)
        head.attach(bundle.model, bundle.tokenizer)
    bundle.head = head
    if ckpt.meta.get("kind") == "linear-probe":
        attach_probe(bundle.model, len(ckpt.meta["classnames"]))
    apply_recipe(bundle.model, ckpt.meta.get("recipe", "clipfit"))
    apply_checkpoint(bundle.model, ckpt, which, model_name=bundle.name)
    bundle.model.eval()
    return bundle


def eval_targets(
    run_dir: Path,
    targets: list[str],
    *,
    data_root: str | None,
    out: Path,
    make_split: bool = False,
    classnames: str | None = None,
    cfg_overrides: dict[str, Any],
    zero_shot: bool = True,
    model: str | None = None,
    pretrained: str | None = None,
    env: DistEnv = DistEnv(),
) -> list[dict[str, Any]]:
    """Evaluate a trained run on other datasets (all classes, each target's names and template).

    Writes ``<out>/<target>/results.json`` with setting ``eval`` (cross-dataset transfer and
    domain generalisation are both this). Zero-shot accuracy of the same pretrained model is
    recorded beside the fine-tuned one unless ``zero_shot`` is False.
    """
    cfg, ckpt = load_run(run_dir)
    for key, value in cfg_overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    device = device_for(env, cfg.device)
    precision = resolve_precision(cfg.precision, device)
    if ckpt.meta.get("kind") == "linear-probe":
        raise RunError(
            f"{run_dir} is a linear probe: its classifier is tied to the {ckpt.meta.get('dataset')} classes it was "
            "fitted on and cannot classify another dataset's; evaluate a fine-tuned recipe on other datasets"
        )
    bundle = build_trained_model(ckpt, device, "final", model, pretrained)
    all_results = []
    for target in targets:
        with main_process_first(env):  # a random split (--make-split) is written once, then read
            dataset = load_dataset(target, data_root, make_split=make_split, classnames=classnames)
        template = dataset.template
        subsets = class_subsets(dataset, dataset.train, "eval")
        started = time.time()
        # The trained model through its recipe's head (CoOp's context, CLIP-Adapter's adapter) with the
        # target's class names and template; zero-shot is CLIP itself at the pretrained values.
        metrics = evaluate_subsets(bundle, dataset, subsets, template, cfg, device, precision, env, bundle.head)
        zs = None
        if zero_shot:
            apply_checkpoint(bundle.model, ckpt, "init", model_name=bundle.name)
            zs = evaluate_subsets(bundle, dataset, subsets, template, cfg, device, precision, env, ClipHead())
            apply_checkpoint(bundle.model, ckpt, "final", model_name=bundle.name)
        logger.info(
            "%s -> %s: %s%s (%.1fs)",
            ckpt.meta.get("dataset"),
            target,
            format_metrics(metrics),
            f" (zero-shot {format_metrics(zs)})" if zs else "",
            time.time() - started,
        )
        results = {
            "dataset": target,
            "setting": "eval",
            "shots": ckpt.meta.get("shots"),
            "seed": ckpt.meta.get("seed"),
            "recipe": ckpt.meta.get("recipe"),
            "model": bundle.name,
            "pretrained": bundle.pretrained,
            "trainable_params": sum(t.numel() for t in ckpt.final.values()),
            "source": {k: ckpt.meta.get(k) for k in ("dataset", "setting", "shots", "seed")}
            | {"run_dir": str(run_dir)},
            "eval_seconds": round(time.time() - started, 2),
            "metrics": metrics,
            "zero_shot": zs,
            "template": template,
            "split_source": dataset.split_source,
            "comparable": dataset.comparable and cfg.max_eval_images is None,
            "precision": precision,
            "signature": signature(
                bundle.name, bundle.pretrained, ckpt.meta.get("recipe"), target, ckpt.meta.get("seed")
            ),
            "versions": versions(),
        }
        if env.is_main:
            atomic_write_text(out / dataset_slug(target) / RESULTS_FILE, json.dumps(results, indent=2) + "\n")
        all_results.append(results)
    return all_results
