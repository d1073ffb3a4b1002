"""The flags of ``clipfit-train`` (its argparse parser); :mod:`clipfit.cli.train` runs what they ask for.

The parser's description is :mod:`clipfit.cli.train`'s docstring (the examples ``--help`` shows). This module
imports no torch: ``--help`` answers at once.
"""

from __future__ import annotations

import argparse

from clipfit.config import CLUSTERS, EVAL_DECODERS, GRAD_CHECKPOINTING, PRECISIONS, PRESETS, SETTINGS, TRAIN_CACHES
from clipfit.console import ArgumentParser, add_version_flag
from clipfit.data.sampling import ALL_SHOTS
from clipfit.recipes import RECIPES, head_options


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


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """Every flag of clipfit-train; ``description`` heads ``--help``."""
    p = ArgumentParser(
        prog="clipfit-train", description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
