"""``clipfit-data``: fetch the benchmarks, and check that the data (and the weights) are ready for a sweep.

Examples::

    clipfit-data fetch dtd eurosat --data-root ~/data       # download, check and unpack into CoOp's layout
    clipfit-data fetch all imagenet-variants --data-root ~/data
    clipfit-data check --data-root ~/data                     # the 11 benchmarks and CLIP ViT-B/16 (openai)
    clipfit-data check --data-root ~/data --datasets imagenet imagenet-variants

``fetch`` downloads every file a benchmark publishes that a script may download (resumable, checked against
the published checksums, unpacked safely), skips what is already there, and ends with the same lines as
``check`` and a list of what must be fetched by hand (ImageNet's images, Stanford Cars), with instructions.
``check`` reads every dataset's split files and folder layout and finds the model's weights (fetching
them into the Hugging Face cache if the network allows) without building a model or training
anything, and prints one line per dataset; both exit with 2 when something is missing, listing all
of it at once, so that a long sweep (``make paper``) never starts on a half-ready setup.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from clipfit.console import add_version_flag, run_command, setup_logging
from clipfit.data.base import DataError
from clipfit.data.fetch import MIRROR_ENV
from clipfit.data.records import DEFAULT_MODEL
from clipfit.data.registry import expand_names, load_dataset
from clipfit.errors import ClipfitError


def _root(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-root",
        "--root",
        dest="data_root",
        required=True,
        help="folder holding the dataset folders (CoOp layout)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clipfit-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version_flag(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    f = sub.add_parser("fetch", help="download the benchmarks a script may download, into CoOp's layout")
    f.add_argument("datasets", nargs="+", metavar="NAME", help="datasets or groups (all, imagenet-variants)")
    _root(f)
    f.add_argument(
        "--mirror",
        metavar="URL",
        help=f"fetch every file from URL/<dataset>/<file> instead of where it is published, with the same "
        f"checksums (default ${MIRROR_ENV}, else the published addresses)",
    )
    f.add_argument(
        "--keep-archives", action="store_true", help="keep the downloaded archives (in <root>/.clipfit-fetch/)"
    )
    f.add_argument("-v", "--verbose", action="count", default=0, help="more detail")
    c = sub.add_parser("check", help="which datasets (and weights) are ready, without training")
    _root(c)
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


def check_datasets(data_root: str, names: list[str], make_split: bool = False) -> list[str]:
    """One line per dataset (ready or MISSING and why); the problems found (empty when all are ready)."""
    problems = []
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
    return problems


def check(data_root: str, datasets: list[str], model: str, pretrained: str, make_split: bool = False) -> list[str]:
    """One line per dataset and one for the weights; the problems found (empty when everything is ready)."""
    from clipfit.models import locate_weights  # torch and open_clip: not for --help

    problems = check_datasets(data_root, expand_names(datasets), make_split)
    try:
        where = locate_weights(model, pretrained)
        print(f"  weights {model} / {pretrained}: ready ({where})")
    except ClipfitError as exc:
        first = str(exc).splitlines()[0]
        problems.append(f"weights {model} / {pretrained}: {first}")
        print(f"  weights {model} / {pretrained}: MISSING  {first}")
    return problems


def _train_command(names: list[str], data_root: str) -> str:
    return f"next:\n  clipfit-train --datasets {' '.join(names)} --data-root {shlex.quote(data_root)}"


def fetch_command(args: argparse.Namespace) -> int:
    """``clipfit-data fetch``: fetch, then the check lines, then what must be fetched by hand."""
    from clipfit.data.fetch import fetch, records_to_fetch

    records = records_to_fetch(args.datasets)  # an unknown name stops here, before any download
    outcomes = fetch(records, Path(args.data_root), args.mirror, args.keep_archives)
    width = max(len(r.name) for r in records)
    print(f"fetch into {args.data_root}:")
    for record, outcome in zip(records, outcomes, strict=True):
        parts = []
        if outcome.fetched:
            parts.append(f"fetched {', '.join(outcome.fetched)}")
        if outcome.present:
            parts.append(f"already there: {', '.join(outcome.present)}")
        if outcome.failed:
            parts.append(f"FAILED: {len(outcome.failed)} file(s) (above)")
        if record.by_hand:
            parts.append("the rest by hand (below)")
        print(f"  {record.name:<{width}}  {'; '.join(parts) or 'nothing to download'}")
    print("check:")
    names = [r.name for r in records]
    problems = check_datasets(args.data_root, names)
    missing = {p.split(":", 1)[0] for p in problems}
    by_hand = [r for r in records if r.by_hand and r.name in missing]
    if by_hand:
        print("must be fetched by hand:")
        for record in by_hand:
            print(f"  {record.name} ({record.folder}/): {record.by_hand}")
    failed = [f"{o.name}: {message}" for o in outcomes for message in o.failed]
    if problems or failed:
        print(
            f"not ready: {len(missing)} of {len(records)} dataset(s)"
            + (f", {len(failed)} download(s) failed (messages above; the same command resumes them)" if failed else "")
            + ". Each dataset's tree and the sources of its files: docs/datasets.md",
            file=sys.stderr,
        )
        return 2
    print("ready")
    print(_train_command(args.datasets, args.data_root))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        if args.command == "fetch":
            return fetch_command(args)
        problems = check(args.data_root, args.datasets, args.model, args.pretrained, args.make_split)
        if problems:
            print(
                f"not ready: {len(problems)} problem(s); nothing was trained. Each dataset's expected tree and where "
                "its files come from: docs/datasets.md (or the error of clipfit-train --dataset NAME --dry-run); "
                f"clipfit-data fetch NAME --data-root {args.data_root} downloads what a script may download",
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
