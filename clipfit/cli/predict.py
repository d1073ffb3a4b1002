"""``clipfit-predict``: classify images with a trained model, into a CSV of the top-k classes.

Examples::

    clipfit-predict runs/shapes/base2new/clipfit/shots16/seed1 photos/ --out predictions.csv
    clipfit-predict runs/.../seed1 a.jpg b.jpg --classnames new_classes.txt --top-k 3
    clipfit-predict exports/my-model photos/ --classnames classes.txt          # an export folder
    clipfit-predict hf-hub:me/my-model photos/ --classnames classes.txt        # an export on the Hub

RUN is a run directory, its checkpoint, an export folder or hf-hub:USER/REPO. A folder is searched
for images recursively (sorted). The CSV has one row per image: path, label_1, prob_1, ... label_K,
prob_K, error. Without --out it goes to standard output. An image that cannot be read is reported
by path (in the CSV's error column and on standard error) while the others are classified; the exit
status is then 1 (2 for bad arguments, nothing classified).
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
from pathlib import Path

from clipfit.console import add_version_flag, run_command, setup_logging
from clipfit.data.custom import IMAGE_EXTENSIONS  # a folder argument contributes what a folder: dataset reads
from clipfit.errors import ConfigError

logger = logging.getLogger("clipfit.cli.predict")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clipfit-predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("run", metavar="RUN", help="run directory, checkpoint, export folder or hf-hub:USER/REPO")
    p.add_argument("images", nargs="+", metavar="IMAGES_OR_FOLDER", help="image files and/or folders of images")
    p.add_argument(
        "--classnames",
        metavar="FILE",
        help="the classes to choose from, one per line (new names welcome; default: the run's training classes)",
    )
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="classes per image in the CSV (default 5)")
    p.add_argument("--out", metavar="CSV", help="write the CSV here (default: standard output)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 or auto")
    p.add_argument(
        "--pretrained",
        metavar="FILE",
        help="the base weights an export's delta applies onto, when the recorded ones are not here",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    add_version_flag(p)
    return p


def image_paths(arguments: list[str]) -> list[Path]:
    """Files as given and the images under folders (recursively, sorted); a missing path or an empty folder is
    refused before any model is loaded."""
    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ConfigError(f"{path} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}, any depth)")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise ConfigError(f"no such image file or folder: {argument}")
    return paths


def read_classnames(path: str) -> list[str]:
    """One class name per line, blank lines skipped."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"class-name file {file} not found (--classnames: one class name per line)")
    names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise ConfigError(f"class-name file {file} holds no class names")
    return names


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # the CSV on standard output must not be interleaved with log lines: then only warnings are shown
    setup_logging(args.verbose, args.quiet or args.out is None)

    def body() -> int:
        if args.top_k < 1 or args.batch_size < 1:
            raise ConfigError(f"--top-k and --batch-size must be at least 1, got {args.top_k} and {args.batch_size}")
        paths = image_paths(args.images)
        classnames = read_classnames(args.classnames) if args.classnames else None
        from clipfit.api import load  # torch and open_clip only once the arguments are checked

        model = load(args.run, device=args.device, pretrained=args.pretrained)
        predictions = model.predict(
            paths, classnames, top_k=args.top_k, batch_size=args.batch_size, on_error="skip", progress=True
        )
        k = min(args.top_k, len(classnames or model.classnames))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", *[f"{c}_{i}" for i in range(1, k + 1) for c in ("label", "prob")], "error"])
        for p in predictions:
            cells = [x for pair in zip(p.labels, p.probs, strict=True) for x in (pair[0], f"{pair[1]:.6f}")]
            writer.writerow([p.source, *cells, *[""] * (2 * k - len(cells)), p.error or ""])
        if args.out is None:
            sys.stdout.write(buffer.getvalue())
        else:
            out = Path(args.out).expanduser()
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(buffer.getvalue(), encoding="utf-8")
        failed = [p for p in predictions if p.error]
        for p in failed:
            logger.warning("%s", p.error)
        classified = len(predictions) - len(failed)
        if args.out is not None:
            logger.info("%d images classified (%s): %s", classified, model.recipe, args.out)
        if failed:
            logger.error("%d of %d images could not be read (listed above); the others were classified", len(failed),
                         len(predictions))  # fmt: skip
            return 1
        return 0

    return run_command(body)


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
