"""``clipfit-train``: fine-tune an open_clip model with ClipFit (or a baseline recipe) and evaluate it.

Examples::

    clipfit-train                                     # ClipFit, base-to-new, 16 shots, seed 1, on the shapes world
    clipfit-train --model ViT-B-16 --pretrained none --dry-run
    clipfit-train --dataset dtd --data-root ~/data --model ViT-B-16 --pretrained openai
    clipfit-train --resume runs/shapes/base2new/clipfit/shots16/seed1
    torchrun --nproc_per_node 2 -m clipfit.cli.train --dataset dtd --data-root ~/data
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from clipfit.cli.common import run_command, setup_logging
from clipfit.config import PRECISIONS, SETTINGS, RunConfig, resolve
from clipfit.recipes import RECIPES
from clipfit.run import CONFIG_FILE, RunError, default_run_dir, results_table, train_run
from clipfit.runtime import init_distributed

logger = logging.getLogger("clipfit.cli.train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clipfit-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = p.add_argument_group("data")
    d.add_argument("--dataset", help="registered dataset name (default: shapes, the built-in shapes world)")
    d.add_argument("--data-root", help="folder holding the dataset folders (CoOp layout)")
    d.add_argument("--setting", choices=SETTINGS, help="base2new (train on base classes) or fewshot (default base2new)")
    d.add_argument("--shots", type=int, help="training images per class (default 16)")
    d.add_argument("--template", help="prompt template with one {} for the class name (default: the dataset's)")
    d.add_argument("--num-workers", type=int, help="DataLoader workers (default: half the cores; 0 for shapes)")
    m = p.add_argument_group("model")
    m.add_argument("--model", help="open_clip architecture (default: ViT-B-16; shapes-vit-tiny for shapes)")
    m.add_argument(
        "--pretrained",
        help="open_clip tag (openai, laion2b_s34b_b88k, ...), local weights file, hf-hub:ORG/REPO, or none "
        "(default: openai; shapes-world for shapes)",
    )
    m.add_argument("--recipe", choices=list(RECIPES), help="which tensors train (default clipfit; see README Recipes)")
    h = p.add_argument_group("baseline recipes")
    h.add_argument("--coop-ctx", type=int, help="coop: learnable context vectors (default 16, random init)")
    h.add_argument("--coop-init", help='coop: initialise the context from a phrase, e.g. "a photo of a"')
    h.add_argument("--adapter-ratio", type=float, help="clip-adapter: residual ratio (default 0.2)")
    h.add_argument("--adapter-reduction", type=int, help="clip-adapter: bottleneck reduction (default 4)")
    o = p.add_argument_group("optimisation (defaults: the paper's values)")
    o.add_argument("--epochs", type=int, help="epochs (default 100; 10 for imagenet and food101)")
    o.add_argument("--lr", type=float, help="peak SGD learning rate (default 0.002; full fine-tuning 1e-4)")
    o.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    o.add_argument("--weight-decay", type=float, help="weight decay of the trained tensors (default 5e-4)")
    o.add_argument("--warmup-epochs", type=int, help="epochs at the warm-up learning rate (default 1)")
    o.add_argument("--warmup-lr", type=float, help="constant warm-up learning rate (default 1e-5)")
    o.add_argument("--batch-size", type=int, help="images per step over all processes (default 32)")
    o.add_argument(
        "--reg-weight",
        type=float,
        help="lambda of the text-feature regulariser (default 8; few-shot: 2, 8 on dtd/sun397)",
    )
    o.add_argument("--seed", type=int, help="seed of the few-shot draw, shuffling and augmentation (default 1)")
    r = p.add_argument_group("run")
    r.add_argument("--out", default="runs", help="root of run directories (default runs/)")
    r.add_argument(
        "--run-dir", help="exact run directory (default <out>/<dataset>/<setting>/<recipe>/shots<K>/seed<S>)"
    )
    r.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run with its stored settings")
    r.add_argument("--overwrite", action="store_true", help="replace an existing run directory's files")
    r.add_argument("--dry-run", action="store_true", help="build the model (and resolve the data), print, and stop")
    r.add_argument("--precision", choices=PRECISIONS, help="auto: bf16 autocast on CUDA, fp32 on CPU")
    r.add_argument("--device", help="auto (default), cpu, cuda, cuda:1")
    r.add_argument("--log-every", type=int, help="steps between metrics/layers records (default 10)")
    r.add_argument("--eval-batch-size", type=int, help="images per evaluation batch (default 256)")
    r.add_argument("--max-eval-images", type=int, help="cap test images per label space (quick checks; not comparable)")
    r.add_argument("-v", "--verbose", action="count", default=0, help="more detail")
    r.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final table")
    return p


def _set(obj, **values) -> None:
    for key, value in values.items():
        if value is not None:
            setattr(obj, key, value)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Map the parsed flags onto a RunConfig; unset flags keep the config's defaults."""
    cfg = RunConfig()
    _set(cfg.model, name=args.model, pretrained=args.pretrained)
    _set(
        cfg.head, coop_n_ctx=args.coop_ctx, coop_init=args.coop_init, adapter_ratio=args.adapter_ratio,
        adapter_reduction=args.adapter_reduction,
    )  # fmt: skip
    _set(
        cfg.data,
        dataset=args.dataset,
        data_root=args.data_root,
        setting=args.setting,
        shots=args.shots,
        template=args.template,
        num_workers=args.num_workers,
    )
    _set(
        cfg.optim,
        epochs=args.epochs,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        warmup_lr=args.warmup_lr,
        batch_size=args.batch_size,
        reg_weight=args.reg_weight,
    )
    _set(
        cfg,
        recipe=args.recipe,
        seed=args.seed,
        precision=args.precision,
        device=args.device,
        log_every=args.log_every,
        eval_batch_size=args.eval_batch_size,
        max_eval_images=args.max_eval_images,
    )
    return cfg


def _resume_config(run_dir: Path, args: argparse.Namespace) -> RunConfig:
    config_file = run_dir / CONFIG_FILE
    if not config_file.is_file():
        raise RunError(f"cannot resume {run_dir}: no {CONFIG_FILE} there (is it a clipfit-train run directory?)")
    cfg = RunConfig.from_dict(json.loads(config_file.read_text())["config"])
    # Only settings that cannot change the results may differ when resuming.
    _set(cfg, device=args.device, eval_batch_size=args.eval_batch_size)
    _set(cfg.data, num_workers=args.num_workers)
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = init_distributed(args.device or "auto")
    setup_logging(args.verbose, args.quiet, env.is_main)

    def body() -> int:
        if args.resume:
            run_dir = Path(args.resume)
            cfg = _resume_config(run_dir, args)
        else:
            cfg = config_from_args(args)
            run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.out, resolve(cfg))
        results = train_run(
            cfg,
            run_dir,
            env=env,
            overwrite=args.overwrite,
            dry_run=args.dry_run,
            resolve_data=args.dataset is not None or args.resume is not None,
        )
        if results is not None and env.is_main:
            print(results_table(results))
            print(f"run directory: {run_dir}")
        return 0

    return run_command(body)


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
