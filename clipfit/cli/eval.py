"""``clipfit-eval``: evaluate a trained run, on its own test set or on other datasets.

Examples::

    clipfit-eval --checkpoint runs/shapes/base2new/clipfit/shots16/seed1
    clipfit-eval --checkpoint runs/imagenet/fewshot/clipfit/shots16/seed1 --data-root ~/data \\
        --datasets imagenet-variants      # domain generalisation: imagenetv2 imagenet_sketch imagenet_a imagenet_r
    clipfit-eval --checkpoint runs/imagenet/fewshot/clipfit/shots16/seed1 --data-root ~/data \\
        --datasets all                    # cross-dataset transfer (the 11 benchmarks)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from clipfit.config import EVAL_DECODERS, PRECISIONS, check_run_options
from clipfit.console import (
    ArgumentParser,
    add_version_flag,
    results_next_commands,
    results_table,
    run_command,
    setup_logging,
)
from clipfit.data.registry import expand_names
from clipfit.recipes import get_recipe

logger = logging.getLogger("clipfit.cli.eval")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="clipfit-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--checkpoint", required=True, metavar="RUN_DIR", help="a clipfit-train run directory (or its checkpoint file)"
    )
    p.add_argument(
        "--datasets",
        nargs="+",
        metavar="NAME",
        help="target datasets: names, 'all' (the 11 benchmarks), 'imagenet-variants', folder:PATH, csv:FILE "
        "(default: the run's own test set and setting)",
    )
    p.add_argument("--data-root", help="folder holding the target dataset folders")
    p.add_argument(
        "--make-split",
        action="store_true",
        help="when a target's published split file is missing, use a random split (results not comparable)",
    )
    p.add_argument("--classnames", metavar="FILE", help="class names of a folder:/csv: target, one per line")
    p.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="leave out test images that cannot be read (listed in results.json, marked not comparable) instead of "
        "stopping before the evaluation",
    )
    p.add_argument("--out", help="where target results go (default <RUN_DIR>/eval/<dataset>/results.json)")
    p.add_argument("--no-zero-shot", action="store_true", help="skip the zero-shot comparison on targets")
    p.add_argument("--model", help="override the recorded architecture (must fit the checkpoint)")
    p.add_argument("--pretrained", help="override the recorded pretrained source (e.g. the weights file moved)")
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--device")
    p.add_argument("--eval-batch-size", type=int)
    p.add_argument("--max-eval-images", type=int, help="cap test images per dataset (quick checks; not comparable)")
    p.add_argument(
        "--eval-cache",
        metavar="on|off|SIZE",
        help="the preprocessed test-set cache: on (default, at most 64GB), off, or a size cap such as 20GB "
        "(default: $CLIPFIT_EVAL_CACHE, else on)",
    )
    p.add_argument(
        "--eval-decoder",
        choices=EVAL_DECODERS,
        help="how test JPEGs are decoded (default: the run's; pil unless it trained with nvjpeg)",
    )
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("-q", "--quiet", action="store_true")
    add_version_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    # torch and open_clip load once the arguments are parsed: --help and --version answer at once
    from clipfit.checkpoint import checkpoint_values
    from clipfit.data.prepare import prepare_data
    from clipfit.evaluate import EvalSettings, zero_shot_metrics
    from clipfit.methods import method_of
    from clipfit.rundir import RESULTS_FILE, default_eval_root, eval_run_dir, load_run
    from clipfit.runtime import (
        destroy_distributed,
        device_for,
        init_distributed,
        main_process_first,
        resolve_precision,
    )
    from clipfit.trained import build_trained_model
    from clipfit.transfer import eval_targets

    env = run_command(lambda: init_distributed(args.device or "auto"))
    if isinstance(env, int):  # could not join torchrun's process group (the error is printed)
        return env
    setup_logging(args.verbose, args.quiet, env.is_main)
    overrides = {
        "device": args.device,
        "precision": args.precision,
        "eval_batch_size": args.eval_batch_size,
        "max_eval_images": args.max_eval_images,
        "eval_cache": args.eval_cache,
        "eval_decoder": args.eval_decoder,
    }

    def body() -> int:
        run_dir = Path(args.checkpoint).expanduser()
        if args.datasets:
            out = Path(args.out) if args.out else default_eval_root(run_dir)
            all_results = eval_targets(
                run_dir,
                expand_names(args.datasets),
                data_root=args.data_root,
                out=out,
                make_split=args.make_split,
                classnames=args.classnames,
                cfg_overrides=overrides,
                zero_shot=not args.no_zero_shot,
                model=args.model,
                pretrained=args.pretrained,
                env=env,
                skip_bad_images=args.skip_bad_images,
            )
            if env.is_main:
                for r in all_results:
                    zs = f"  (zero-shot {r['zero_shot']['acc']:.2f})" if r["zero_shot"] else ""
                    where = eval_run_dir(out, r["dataset"], writable=False).file(RESULTS_FILE)
                    print(f"{r['dataset']:<16} acc {r['metrics']['acc']:6.2f}{zs}  {where}")
                logger.info(results_next_commands(out))
            return 0
        cfg, ckpt, _ = load_run(run_dir)
        if not ckpt.meta.get("complete", True):
            logger.warning(
                "%s is an unfinished run (epoch %s): evaluating its last checkpoint", run_dir, ckpt.meta.get("epoch")
            )
        for key, value in overrides.items():
            if value is not None:
                setattr(cfg, key, value)
        if args.data_root:
            cfg.data.data_root = args.data_root
        cfg.data.make_split = cfg.data.make_split or args.make_split
        cfg.data.skip_bad_images = cfg.data.skip_bad_images or args.skip_bad_images
        check_run_options(cfg)
        device = device_for(env, cfg.device)
        precision = resolve_precision(cfg.precision, device)
        with main_process_first(env):  # few-shot draws and random splits are written once, then read
            data = prepare_data(cfg)  # and every image checked, before the model is built
        bundle = build_trained_model(ckpt, device, "final", args.model, args.pretrained)
        settings = EvalSettings.of(cfg, device, precision, env)
        metrics = method_of(get_recipe(cfg.recipe)).evaluate(bundle, data, settings)
        zero_shot = ckpt.meta.get("zero_shot")
        if zero_shot is None and not args.no_zero_shot:  # CLIP itself at the pretrained values
            with checkpoint_values(bundle.model, ckpt, "init", model_name=bundle.name):
                zero_shot = zero_shot_metrics(bundle, data, settings)
        if env.is_main:
            print(results_table({"recipe": cfg.recipe, "metrics": metrics, "zero_shot": zero_shot or metrics}))
        return 0

    try:
        return run_command(body)
    finally:
        destroy_distributed()


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
