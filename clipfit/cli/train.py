"""``clipfit-train``: fine-tune an open_clip model with ClipFit (or a baseline recipe) and evaluate it.

Examples::

    clipfit-train                                     # ClipFit, base-to-new, 16 shots, seed 1, on the shapes world
    clipfit-train --model ViT-B-16 --pretrained none --dry-run
    clipfit-train --dataset dtd --data-root ~/data --model ViT-B-16 --pretrained openai
    clipfit-train --datasets all --data-root ~/data --setting base2new --seeds 1 2 3 --preset paper
    clipfit-train --datasets dtd eurosat --data-root ~/data --setting fewshot --shots 1 2 4 8 16 --seeds 1 2 3
    clipfit-train --dataset folder:~/my_photos --shots all      # every class, every image, validation each epoch
    clipfit-train --resume runs/shapes/base2new/clipfit/shots16/seed1
    torchrun --nproc_per_node 2 -m clipfit.cli.train --dataset dtd --data-root ~/data
    torchrun --nproc_per_node 8 $(which clipfit-train) --dataset imagenet --data-root ~/data --compile

Several datasets, settings, shots or seeds make a sweep: one run directory per combination,
<out>/<dataset>/<setting>/<recipe>/shots<K>/seed<S>/; finished runs are skipped and half-finished
ones resumed, so an interrupted sweep continues where it stopped when run again. --workers N runs the
sweep's runs in N processes (one per GPU: --workers auto), --cluster slurm as SLURM array tasks:

    clipfit-train --datasets all --data-root ~/data --seeds 1 2 3 --workers auto
    clipfit-train --datasets all --data-root ~/data --seeds 1 2 3 --cluster slurm \\
        --cluster-option timeout_min=240 slurm_partition=gpu gpus_per_node=1 cpus_per_task=8
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from clipfit.cli import train_flags
from clipfit.config import (
    RunConfig,
    default_setting,
    resolve,
    resolve_head_options,
)
from clipfit.console import (
    next_commands,
    results_next_commands,
    results_table,
    run_command,
    setup_logging,
)
from clipfit.data.registry import expand_names, get_spec
from clipfit.errors import ConfigError
from clipfit.recipes import head_options
from clipfit.tracking import parse_report_to

if TYPE_CHECKING:  # torch and open_clip load once the arguments are parsed: --help and --version answer at once
    from clipfit.runtime import DistEnv

logger = logging.getLogger("clipfit.cli.train")


def build_parser():
    """clipfit-train's parser (:mod:`clipfit.cli.train_flags`) with this module's examples as its description."""
    return train_flags.build_parser(__doc__)


def _set(obj, **values) -> None:
    for key, value in values.items():
        if value is not None:
            setattr(obj, key, value)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Map the parsed flags onto a RunConfig (the first value of each sweep axis); unset flags keep the
    config's defaults."""
    cfg = RunConfig()
    _set(cfg.model, name=args.model, pretrained=args.pretrained, quick_gelu=args.quick_gelu)
    cfg.head = {name: getattr(args, name) for name in head_options() if getattr(args, name) is not None}
    _set(
        cfg.data,
        dataset=expand_names(args.datasets)[0] if args.datasets else None,
        data_root=args.data_root,
        setting=args.setting[0] if args.setting else None,
        shots=args.shots[0] if args.shots else None,
        template=args.template,
        num_workers=args.num_workers,
        train_cache=args.train_cache,
        make_split=args.make_split,
        classnames=args.classnames,
        skip_bad_images=args.skip_bad_images,
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
        recipe=args.recipes[0] if args.recipes else None,
        seed=args.seeds[0] if args.seeds else None,
        precision=args.precision,
        device=args.device,
        log_every=args.log_every,
        eval_batch_size=args.eval_batch_size,
        max_eval_images=args.max_eval_images,
        compile=args.compile,
        grad_checkpointing=args.grad_checkpointing,
        checkpoint_every=args.checkpoint_every,
        val_every=args.val_every,
        eval_cache=args.eval_cache,
        eval_decoder=args.eval_decoder,
    )
    return cfg


def run_configs(args: argparse.Namespace) -> list[RunConfig]:
    """One RunConfig per (dataset, setting, recipe, shots, seed) of the sweep, in that nesting order."""
    base = config_from_args(args)
    datasets = expand_names(args.datasets) if args.datasets else [base.data.dataset]
    for name in datasets:
        if get_spec(name).test_only:
            raise ConfigError(f"dataset '{name}' is test-only: train on another one and evaluate with clipfit-eval")
    if args.preset and (args.epochs is not None or args.reg_weight is not None):
        raise ConfigError("--preset paper sets the epochs and lambda of every dataset; drop --epochs/--reg-weight")
    configs = []
    # Unset epochs and lambda resolve per dataset, setting and recipe to the paper's values (clipfit.config).
    axes = itertools.product(
        datasets, args.setting or [base.data.setting], args.recipes or [base.recipe], args.shots or [base.data.shots],
        args.seeds or [base.seed],
    )  # fmt: skip
    for dataset, setting, recipe, shots, seed in axes:
        setting = setting or default_setting(dataset)
        cfg = RunConfig.from_dict(base.to_dict())
        cfg.data.dataset, cfg.data.setting, cfg.recipe, cfg.data.shots, cfg.seed = dataset, setting, recipe, shots, seed
        configs.append(cfg)
    _check_context_options(args, configs)
    if len(configs) > 1 and args.run_dir:
        raise ConfigError(f"--run-dir names one run, but the flags make a sweep of {len(configs)} runs; use --out")
    return configs


def _check_context_options(args: argparse.Namespace, configs: list[RunConfig]) -> None:
    """Refuse a --coop-ctx that a CoOp-style head would ignore: an init phrase sets the number of context
    vectors to its token count (cocoop and kgcoop start from "a photo of a" unless --coop-init "" is given)."""
    if getattr(args, "coop_ctx", None) is None:
        return
    from clipfit.recipes import get_recipe

    for name in dict.fromkeys(cfg.recipe for cfg in configs):
        recipe = get_recipe(name)
        if "coop_init" not in {f.name for f in recipe.head.options()}:
            continue  # a sweep's shared flags: other heads drop the option
        phrase = resolve_head_options(recipe, configs[0].head).get("coop_init")
        if phrase:
            source = "--coop-init" if args.coop_init else "the recipe's default --coop-init"
            raise ConfigError(
                f"--coop-ctx {args.coop_ctx} has no effect on recipe {name}: its context starts from the phrase "
                f"{phrase!r} ({source}), whose token count sets the number of vectors; for {args.coop_ctx} random "
                f'vectors add --coop-init "", or drop --coop-ctx'
            )


def sweep(configs: list[RunConfig], args: argparse.Namespace, env: DistEnv) -> int:
    """Run every configuration into its own directory (clipfit.sweeps: in this process or in --workers processes;
    clipfit.cluster: as --cluster array tasks); a failed run does not stop the others, a dataset whose data fails is
    skipped."""
    from clipfit import sweeps
    from clipfit.rundir import default_run_dir

    cells = [
        sweeps.Cell(i, cfg.to_dict(), str(default_run_dir(args.out, resolve(cfg)))) for i, cfg in enumerate(configs)
    ]
    options = sweeps.CellOptions(args.overwrite, args.dry_run, tuple(parse_report_to(args.report_to)))
    outcomes = _launcher(args, env).run(cells, options)
    if env.is_main:
        print(sweeps.summary(cells, outcomes))
        if not args.dry_run:
            logger.info(results_next_commands(args.out))
    failed = sweeps.failures(outcomes)
    if failed:
        logger.error("%d of %d runs failed or were skipped; see the messages above", failed, len(cells))
        return 2
    return 0


def _check_launch_flags(args: argparse.Namespace) -> bool:
    """Whether --cluster or --workers ask for a launcher; refuses the combinations that would ignore them."""
    launched = bool(args.cluster) or (args.workers not in (None, "1"))
    if (args.cluster_option or args.cluster_folder) and not args.cluster:
        raise ConfigError("--cluster-option and --cluster-folder configure --cluster; add --cluster slurm (or local)")
    if launched and args.resume:
        raise ConfigError(
            "--resume continues one run in this process; to resume runs on a cluster or in workers, run the same "
            "sweep command again (finished runs are skipped, interrupted ones resume)"
        )
    if launched and args.run_dir:
        raise ConfigError("--run-dir names one run's folder here; --cluster and --workers use <out>/... folders")
    return launched


def _launcher(args: argparse.Namespace, env: DistEnv):
    from clipfit import sweeps

    workers = args.workers or "1"
    if workers != "auto" and not workers.isdigit():
        raise ConfigError(f"--workers takes a number or auto, got {workers!r}")
    if (args.cluster or workers != "1") and env.distributed:
        raise ConfigError(
            "--workers and --cluster run a sweep's runs in processes of their own; under torchrun every run uses "
            "all processes: drop one of them"
        )
    if args.cluster:
        if workers != "1":
            raise ConfigError("--cluster runs one array task per run; --workers does not apply to it")
        folder = Path(args.cluster_folder) if args.cluster_folder else Path(args.out) / ".submitit"
        from clipfit import cluster

        parameters = cluster.parse_cluster_options(args.cluster_option)
        return cluster.SubmititLauncher(cluster.submitit_executor(args.cluster, folder, parameters))
    if workers == "1":
        return sweeps.Sequential(env)
    return sweeps.LocalPool.for_machine(workers, args.device)


def _refuse_changed_settings(run_dir: Path, cfg: RunConfig, args: argparse.Namespace) -> None:
    """--resume with a flag that would change the results (--lr, --epochs, --eval-decoder, ...) and a value other
    than the run's: refused, naming each, instead of silently training on with the stored value."""
    from clipfit.config import flatten_settings
    from clipfit.rundir import RESULT_NEUTRAL, RunError

    given = flatten_settings(config_from_args(args).to_dict())
    default = flatten_settings(RunConfig().to_dict())
    stored = flatten_settings(cfg.to_dict())
    changed = [
        f"{'.'.join(key)} {stored.get(key)!r} (given {value!r})"
        for key, value in given.items()
        if value != default.get(key) and key not in RESULT_NEUTRAL and key != ("data", "train_cache")
        and value != stored.get(key)
    ]  # fmt: skip
    if changed:
        raise RunError(
            f"cannot resume {run_dir} with other settings: the run has {'; '.join(changed)}. Drop those flags to "
            "resume it as it was, or start a new run (another --out or --run-dir)"
        )


def _resume_config(run_dir: Path, args: argparse.Namespace) -> RunConfig:
    from clipfit.errors import RunError
    from clipfit.rundir import CONFIG_FILE, RunDir

    cfg = RunDir(run_dir).config()
    if cfg is None:
        raise RunError(f"cannot resume {run_dir}: no {CONFIG_FILE} there (is it a clipfit-train run directory?)")
    # Only settings that cannot change the results may differ when resuming.
    _set(
        cfg, device=args.device, eval_batch_size=args.eval_batch_size, compile=args.compile,
        grad_checkpointing=args.grad_checkpointing, checkpoint_every=args.checkpoint_every, val_every=args.val_every,
        eval_cache=args.eval_cache,
    )  # fmt: skip
    _set(cfg.data, num_workers=args.num_workers)
    _refuse_changed_settings(run_dir, cfg, args)
    if args.train_cache is not None and args.train_cache != cfg.data.train_cache:
        # it changes what is trained: the rest of the run must crop its views as its first epochs did
        raise RunError(
            f"cannot resume {run_dir} with --train-cache {args.train_cache}: the run trains with "
            f"--train-cache {cfg.data.train_cache} (drop the flag, or start a new run)"
        )
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    from clipfit.run import train_run
    from clipfit.rundir import default_run_dir
    from clipfit.runtime import destroy_distributed, init_distributed

    env = run_command(lambda: init_distributed(args.device or "auto"))
    if isinstance(env, int):  # could not join torchrun's process group (the error is printed)
        return env
    setup_logging(args.verbose, args.quiet, env.is_main)

    def body() -> int:
        report_to = parse_report_to(args.report_to)  # a missing tracker package is refused before anything runs
        launched = _check_launch_flags(args)
        if args.resume:
            run_dir = Path(args.resume)
            cfg = _resume_config(run_dir, args)
        else:
            configs = run_configs(args)
            if len(configs) > 1 or launched:  # --cluster / --workers: even one run goes through the launcher
                return sweep(configs, args, env)
            cfg = configs[0]
            run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.out, resolve(cfg))
        results = train_run(
            cfg,
            run_dir,
            env=env,
            overwrite=args.overwrite,
            dry_run=args.dry_run,
            resolve_data=args.datasets is not None or args.resume is not None,
            report_to=report_to,
        )
        if results is not None and env.is_main:
            print(results_table(results))
            print(f"run directory: {run_dir}")
            logger.info(next_commands(run_dir))
        return 0

    try:
        return run_command(body)
    finally:
        destroy_distributed()


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
