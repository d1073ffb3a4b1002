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

from clipfit.config import (
    CLUSTERS,
    EVAL_DECODERS,
    GRAD_CHECKPOINTING,
    PRECISIONS,
    PRESETS,
    SETTINGS,
    TRAIN_CACHES,
    RunConfig,
    default_setting,
    resolve,
    resolve_head_options,
)
from clipfit.console import (
    ArgumentParser,
    add_version_flag,
    next_commands,
    results_next_commands,
    results_table,
    run_command,
    setup_logging,
)
from clipfit.data.registry import expand_names, get_spec
from clipfit.data.sampling import ALL_SHOTS
from clipfit.errors import ConfigError
from clipfit.recipes import RECIPES, head_options
from clipfit.tracking import parse_report_to

if TYPE_CHECKING:  # torch and open_clip load once the arguments are parsed: --help and --version answer at once
    from clipfit.runtime import DistEnv

logger = logging.getLogger("clipfit.cli.train")


def _shots(value: str) -> int | str:
    """--shots: a positive number of images per class, or 'all'."""
    if value == ALL_SHOTS:
        return value
    try:
        shots = int(value)
    except ValueError:
        expected = f"expected a number of images per class or '{ALL_SHOTS}'"
        raise argparse.ArgumentTypeError(f"{expected}, got {value!r}") from None
    if shots < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 image per class (or '{ALL_SHOTS}'), got {shots}")
    return shots


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="clipfit-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument(
        "--dataset",
        "--datasets",
        dest="datasets",
        nargs="+",
        metavar="NAME",
        help="dataset(s): a registered name (shapes, imagenet, dtd, ...), 'all' (the 11 benchmarks), "
        "folder:PATH (one sub-folder per class) or csv:FILE (path,label columns) (default: shapes)",
    )
    d.add_argument("--data-root", help="folder holding the dataset folders (CoOp layout, see README 'Datasets')")
    d.add_argument(
        "--setting",
        nargs="+",
        choices=SETTINGS,
        help="base2new (train on base classes, report Base/New/HM) and/or fewshot (all classes) (default base2new "
        "for the benchmarks and shapes, fewshot for folder:/csv: images)",
    )
    d.add_argument(
        "--shots",
        nargs="+",
        type=_shots,
        metavar="K",
        help="training images per class, or 'all' for every training image (default 16)",
    )
    d.add_argument("--template", help="prompt template with one {} for the class name (default: the dataset's)")
    d.add_argument(
        "--make-split",
        action="store_true",
        default=None,
        help="when a benchmark's published split file is missing, draw a random split (saved in the cache "
        "directory; results are marked not comparable)",
    )
    d.add_argument("--classnames", metavar="FILE", help="class names of a folder:/csv: dataset, one per line")
    d.add_argument(
        "--skip-bad-images",
        action="store_true",
        default=None,
        help="leave out the few-shot and test images that cannot be read (listed in results.json, which marks "
        "the run not comparable) instead of stopping before training",
    )
    d.add_argument("--num-workers", type=int, help="DataLoader workers (default: half the cores; 0 for shapes)")
    d.add_argument(
        "--train-cache",
        choices=TRAIN_CACHES,
        help="where training crops come from. none (default): every view decodes its image and crops it at full "
        "resolution, as the paper's code (Dassl) does. crop-size: decode each few-shot image once, short side resized "
        "to the crop size, and crop that copy: no decoding per view (more views per second per worker), but small "
        "crops are upsampled from fewer pixels (softer views), so results differ from the default's. Recorded in "
        "config.json; a run cannot be resumed with the other value",
    )
    m = p.add_argument_group("model")
    m.add_argument("--model", help="open_clip architecture (default: ViT-B-16; shapes-vit-tiny for shapes)")
    m.add_argument(
        "--pretrained",
        help="open_clip tag (openai, laion2b_s34b_b88k, ...), local weights file, hf-hub:ORG/REPO, or none "
        "(default: openai; shapes-world for shapes)",
    )
    m.add_argument(
        "--quick-gelu",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="build the network with QuickGELU (OpenAI's CLIP) or not; default: as the weights were trained (an "
        "open_clip tag's config, OpenAI's TorchScript archives), else the architecture's config. Needed for an "
        "open_clip-format file of OpenAI weights, or use --model ViT-B-16-quickgelu",
    )
    m.add_argument(
        "--recipe",
        "--recipes",
        dest="recipes",
        nargs="+",
        choices=list(RECIPES),
        metavar="NAME",
        help=f"recipe(s): which tensors train (default clipfit; one of {', '.join(RECIPES)}; see README Recipes)",
    )
    h = p.add_argument_group("baseline recipes (the options of their heads)")
    for name, option in head_options().items():
        flag = f"--{name.replace('_', '-')}"
        h.add_argument(flag, dest=name, type=option.metadata["type"], help=option.metadata["help"])
    o = p.add_argument_group("optimisation (defaults: the paper's values)")
    o.add_argument("--epochs", type=int, help="epochs (default 100; 10 for imagenet and food101; cocoop 10, maple 5)")
    o.add_argument("--lr", type=float, help="peak SGD learning rate (default 0.002; full 1e-4, maple 0.0035)")
    o.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    o.add_argument("--weight-decay", type=float, help="weight decay of the trained tensors (default 5e-4)")
    o.add_argument("--warmup-epochs", type=int, help="epochs at the warm-up learning rate (default 1)")
    o.add_argument("--warmup-lr", type=float, help="constant warm-up learning rate (default 1e-5)")
    o.add_argument(
        "--batch-size", type=int, help="images per step over all processes (default 32; cocoop 1, kgcoop 128, maple 4)"
    )
    o.add_argument(
        "--reg-weight",
        type=float,
        help="lambda of the text-feature regulariser (default 8; few-shot: 2, 8 on dtd/sun397; kgcoop 8; 0 for the "
        "other baselines)",
    )
    o.add_argument(
        "--seed",
        "--seeds",
        dest="seeds",
        nargs="+",
        type=int,
        metavar="S",
        help="seed(s) of the few-shot draw, shuffling and augmentation (default 1)",
    )
    o.add_argument(
        "--preset",
        choices=PRESETS,
        help="paper: the paper's per-dataset epochs and lambda for every run (the defaults; the flag refuses "
        "--epochs/--reg-weight so a sweep cannot drift from them)",
    )
    r = p.add_argument_group("run")
    r.add_argument("--out", default="runs", help="root of run directories (default runs/)")
    r.add_argument(
        "--run-dir",
        help="exact run directory of a single run (default <out>/<dataset>/<setting>/<recipe>/shots<K>/seed<S>)",
    )
    r.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run with its stored settings")
    r.add_argument("--overwrite", action="store_true", help="replace an existing run directory's files")
    r.add_argument("--dry-run", action="store_true", help="build the model (and resolve the data), print, and stop")
    r.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto: bf16 autocast on CUDA, fp32 on CPU; fp16 autocast adds a gradient scaler; half: the released "
        "code's numerics (CLIP's linear weights and the trained text biases in fp16, no loss scaling)",
    )
    r.add_argument("--device", help="auto (default), cpu, cuda, cuda:1")
    r.add_argument("--log-every", type=int, help="steps between metrics/layers records (default 10)")
    r.add_argument(
        "--report-to",
        metavar="NAMES",
        help="also send the metrics rows to tensorboard and/or wandb (comma-separated, e.g. tensorboard,wandb; "
        "optional packages: pip install 'clipfit[tensorboard]' / 'clipfit[wandb]')",
    )
    r.add_argument("--eval-batch-size", type=int, help="images per evaluation batch (default 256)")
    r.add_argument("--max-eval-images", type=int, help="cap test images per label space (quick checks; not comparable)")
    r.add_argument(
        "--eval-cache",
        metavar="on|off|SIZE",
        help="keep each test set's preprocessed pixels in the cache directory so later evaluations decode nothing: "
        "on (default, at most 64GB), off, or a size cap such as 20GB (default: $CLIPFIT_EVAL_CACHE, else on)",
    )
    r.add_argument(
        "--eval-decoder",
        choices=EVAL_DECODERS,
        help="how test JPEGs are decoded: pil (default; the test transform itself) or nvjpeg (on the GPU, in "
        "batches; slightly different pixels, so its accuracies can differ by a few images)",
    )
    s = p.add_argument_group("speed (never changes what is trained)")
    s.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the training forward (falls back to eager with a warning where it cannot compile; "
        "--no-compile turns it off when resuming a run that used it)",
    )
    s.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help="write the resumable checkpoint every N epochs instead of every epoch (and after the last): less "
        "disk traffic for full fine-tuning of large models; a crash then loses up to N-1 epochs",
    )
    s.add_argument(
        "--val-every",
        type=int,
        metavar="N",
        help="validation accuracy every N epochs on the few-shot val split, logged and in results.json (0: none; "
        "default every epoch for folder:/csv: images, none for the benchmarks and shapes, as in the paper)",
    )
    s.add_argument(
        "--grad-checkpointing",
        nargs="?",
        const="all",
        choices=GRAD_CHECKPOINTING,
        help="recompute transformer block activations in backward to save memory: text (grows with the "
        "class count), image, or all (the default when the flag is given alone)",
    )
    w = p.add_argument_group("sweeps (several runs in parallel; see docs/training.md)")
    w.add_argument(
        "--workers",
        metavar="N|auto",
        help="run a sweep's runs in N worker processes on this machine: one GPU each when there are GPUs (auto: one "
        "per GPU), else CPU processes with cores/N torch threads each (default 1: one after the other)",
    )
    w.add_argument(
        "--cluster",
        choices=CLUSTERS,
        help="submit each unfinished run of the sweep as a SLURM array task through submitit (local: as processes "
        "of this machine, debug: in this process, to try it); waits and prints the same summary. Needs "
        "pip install 'clipfit[submitit]'",
    )
    w.add_argument(
        "--cluster-option",
        nargs="+",
        metavar="KEY=VALUE",
        help="submitit parameters, e.g. timeout_min=240 slurm_partition=gpu gpus_per_node=1 cpus_per_task=8 "
        "mem_gb=64 slurm_array_parallelism=32",
    )
    w.add_argument("--cluster-folder", help="where submitit keeps its job files and logs (default <out>/.submitit)")
    r.add_argument("-v", "--verbose", action="count", default=0, help="more detail")
    r.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final table")
    add_version_flag(p)
    return p


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
    from clipfit.rundir import RESULT_NEUTRAL, RunError, flatten_settings

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
