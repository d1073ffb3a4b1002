"""``clipfit-data``: is the data (and are the weights) ready for a sweep?

Examples::

    clipfit-data check --data-root ~/data                     # the 11 benchmarks and CLIP ViT-B/16 (openai)
    clipfit-data check --data-root ~/data --datasets imagenet imagenet-variants

``check`` reads every dataset's split files and folder layout and finds the model's weights (fetching
them into the Hugging Face cache if the network allows) without building a model or training
anything, and prints one line per dataset; it exits with 2 when something is missing, listing all
of it at once, so that a long sweep (``make paper``) never starts on a half-ready setup.
"""

from __future__ import annotations

import argparse
import sys

from clipfit.console import add_version_flag, run_command, setup_logging
from clipfit.data.base import DataError
from clipfit.data.records import DEFAULT_MODEL
from clipfit.data.registry import expand_names, load_dataset
from clipfit.errors import ClipfitError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clipfit-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version_flag(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser("check", help="which datasets (and weights) are ready, without training")
    c.add_argument("--data-root", required=True, help="folder holding the dataset folders (CoOp layout)")
    c.add_argument("--datasets", nargs="+", default=["all"], metavar="NAME", help="datasets or groups (default: all)")
    c.add_argument(
        "--model", default=DEFAULT_MODEL[0], help=f"architecture whose weights to find (default {DEFAULT_MODEL[0]})"
    )
    c.add_argument(
        "--pretrained", default=DEFAULT_MODEL[1], help=f"pretrained source (default {DEFAULT_MODEL[1]}; none skips)"
    )
    c.add_argument("--make-split", action="store_true", help="accept datasets without a published split file")
    c.add_argument("-v", "--verbose", action="count", default=0, help="more detail")
    return p


def check(data_root: str, datasets: list[str], model: str, pretrained: str, make_split: bool = False) -> list[str]:
    """One line per dataset and one for the weights; the problems found (empty when everything is ready)."""
    from clipfit.models import locate_weights  # torch and open_clip: not for --help

    problems = []
    names = expand_names(datasets)
    width = max(len(n) for n in names)
    for name in names:
        try:
            dataset = load_dataset(name, data_root, make_split=make_split)
        except DataError as exc:
            first = str(exc).splitlines()[0]
            problems.append(f"{name}: {first}")
            print(f"  {name:<{width}}  MISSING  {first}")
            continue
        print(f"  {name:<{width}}  ready    {dataset.summary().split(': ', 1)[1]}")
    try:
        where = locate_weights(model, pretrained)
        print(f"  weights {model} / {pretrained}: ready ({where})")
    except ClipfitError as exc:
        first = str(exc).splitlines()[0]
        problems.append(f"weights {model} / {pretrained}: {first}")
        print(f"  weights {model} / {pretrained}: MISSING  {first}")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        problems = check(args.data_root, args.datasets, args.model, args.pretrained, args.make_split)
        if problems:
            print(
                f"not ready: {len(problems)} problem(s); nothing was trained. Each dataset's expected tree and where "
                "its files come from: docs/datasets.md (or the error of clipfit-train --dataset NAME --dry-run)",
                file=sys.stderr,
            )
            return 2
        print("ready")
        return 0

    return run_command(body)


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
