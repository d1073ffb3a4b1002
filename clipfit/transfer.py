"""A trained run on other datasets: cross-dataset transfer and domain generalisation (``clipfit-eval``).

Every target is evaluated on all its classes with its own class names and template, through the
recipe's head (CoOp's context, CLIP-Adapter's adapter); zero-shot is CLIP itself at the pretrained
values of the same model. Results go to ``<out>/<target>/results.json`` with setting ``eval``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from clipfit.checkpoint import checkpoint_values
from clipfit.config import check_run_options
from clipfit.console import format_metrics
from clipfit.data.base import DataError
from clipfit.data.registry import get_spec, load_dataset
from clipfit.data.sampling import class_subsets
from clipfit.data.verify import check_images, without
from clipfit.errors import RunError
from clipfit.evaluate import EvalSettings, evaluate_subsets
from clipfit.files import check_output_folder
from clipfit.heads import ClipHead
from clipfit.methods import method_of
from clipfit.provenance import signature, versions
from clipfit.recipes import get_recipe
from clipfit.reference import self_check
from clipfit.rundir import eval_run_dir, load_run
from clipfit.runtime import DistEnv, device_for, main_process_first, resolve_precision
from clipfit.trained import build_trained_model

logger = logging.getLogger(__name__)


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
    skip_bad_images: bool = False,
) -> list[dict[str, Any]]:
    """Evaluate a trained run on other datasets; returns each target's results (also written to ``out``).

    ``cfg_overrides`` replaces run settings that do not change what the model is (device,
    precision, eval batch size, max eval images, the test-set cache and decoder); ``zero_shot=False``
    skips the zero-shot comparison. Every target's test images are checked before the model is built;
    ``skip_bad_images`` leaves the unreadable ones out (recorded in the target's results.json, marked not
    comparable) instead of stopping.
    """
    cfg, ckpt, _ = load_run(run_dir)
    if not ckpt.meta.get("complete", True):
        # an unfinished run (or one training right now): results of its last epoch are not the run's results
        raise RunError(
            f"{run_dir} is an unfinished run (epoch {ckpt.meta.get('epoch')} of {ckpt.meta.get('epochs')}): "
            f"finish it first (clipfit-train --resume {run_dir}), then evaluate it on other datasets"
        )
    for key, value in cfg_overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    device = device_for(env, cfg.device)
    precision = resolve_precision(cfg.precision, device)
    method = method_of(get_recipe(ckpt.meta.get("recipe") or "clipfit"))
    if method.transfer_refusal:
        reason = method.transfer_refusal.format(dataset=ckpt.meta.get("dataset"))
        raise RunError(f"{run_dir} is a {method.name.replace('-', ' ')}: {reason}")
    check_run_options(cfg)
    check_output_folder(out, "--out")
    datasets = {}
    for target in targets:  # every target's data and images are checked before the model is built
        with main_process_first(env):  # a random split (--make-split) is written once, then read
            dataset = load_dataset(target, data_root, make_split=make_split, classnames=classnames)
        if not dataset.test:
            raise DataError(f"dataset '{target}' has no test images ({dataset.split_source})")
        bad = check_images({"test": dataset.test}, dataset.reader, target, skip_bad_images)
        if bad:
            dataset.test, dataset.comparable = without(dataset.test, bad), False
        datasets[target] = (dataset, bad)
    bundle = build_trained_model(ckpt, device, "final", model, pretrained)
    settings = EvalSettings.of(cfg, device, precision, env)
    all_results = []
    for target, (dataset, bad) in datasets.items():
        template = dataset.template
        subsets = class_subsets(dataset, dataset.train, "eval")
        started = time.time()
        metrics = evaluate_subsets(bundle, dataset, subsets, template, settings, bundle.head)
        zs = published = check = None
        comparable = dataset.comparable and cfg.max_eval_images is None
        if zero_shot:
            published_template = get_spec(target).zeroshot_template or template
            with checkpoint_values(bundle.model, ckpt, "init", model_name=bundle.name):
                zs = evaluate_subsets(bundle, dataset, subsets, template, settings, ClipHead())
                if published_template != template:  # the published protocol's template (DTD)
                    metrics_p = evaluate_subsets(bundle, dataset, subsets, published_template, settings, ClipHead())
                    published = {"template": published_template, "metrics": metrics_p}
            check = self_check(
                bundle.name, bundle.pretrained, bundle.activation, target, "eval", comparable,
                (published or {"metrics": zs})["metrics"], published_template,
            )  # fmt: skip
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
            "comparable": comparable,
            **({"bad_images": [b.to_json() for b in bad]} if bad else {}),
            "precision": precision,
            "activation": bundle.activation,
            "signature": signature(
                bundle.name,
                bundle.pretrained,
                ckpt.meta.get("recipe"),
                target,
                ckpt.meta.get("seed"),
                bundle.activation,
                setting="eval",
                shots=ckpt.meta.get("shots"),
            ),
            "versions": versions(),
            **({"zero_shot_published": published} if published is not None else {}),
            **({"self_check": check} if check is not None else {}),
        }
        eval_run_dir(out, target, writable=env.is_main).write_results(results)
        all_results.append(results)
    return all_results
