"""``clipfit-export``: a trained model as open_clip weights, a small delta and a model card.

Examples::

    clipfit-export runs/shapes/base2new/clipfit/shots16/seed1 --out exports/shapes-clipfit
    clipfit-export runs/dtd/base2new/coop/shots16/seed1 --out exports/dtd-coop      # the delta only: a head
    clipfit-export runs/.../seed1 --out exports/x --no-merged --push-to-hub me/x    # kilobytes to the Hub

For recipes that train tensors of the open_clip model itself (clipfit, bitfit, ln-tuning, full, ...)
the folder holds the merged model in the layout open_clip's ``hf-hub:`` and ``local-dir:`` loaders
read (open_clip_model.safetensors + open_clip_config.json); the command prints the exact
``open_clip.create_model`` call. Every export also holds the delta (the trained tensors and the
recipe's head, clipfit_delta.safetensors + clipfit_config.json), which ``clipfit.load`` applies
onto the named pretrained weights, and README.md, the model card.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from clipfit.console import add_version_flag, run_command, setup_logging
from clipfit.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clipfit-export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("run", metavar="RUN", help="run directory, checkpoint, export folder or hf-hub:USER/REPO")
    p.add_argument("--out", metavar="DIR", help="the export folder (required unless --push-to-hub is given)")
    p.add_argument(
        "--merged",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write the merged open_clip model (default: whenever the recipe allows it); --no-merged: the delta only",
    )
    p.add_argument("--push-to-hub", metavar="USER/REPO", help="upload the export to this Hugging Face Hub repository")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository as private")
    p.add_argument("--device", default="cpu", help="where to build the model (default cpu)")
    p.add_argument(
        "--pretrained",
        metavar="FILE",
        help="the base weights the run's tensors apply onto, when the recorded ones are not here",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    add_version_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)

    def body() -> int:
        if args.out is None and args.push_to_hub is None:
            raise ConfigError("say where the export goes: --out DIR, --push-to-hub USER/REPO, or both")
        from clipfit import hub
        from clipfit.api import load  # torch and open_clip only once the arguments are checked
        from clipfit.modelcard import size_text

        repo = hub.repo_id(args.push_to_hub) if args.push_to_hub else None
        model = load(args.run, device=args.device, pretrained=args.pretrained)
        with tempfile.TemporaryDirectory(prefix="clipfit-export-") as scratch:
            folder = Path(args.out).expanduser() if args.out else Path(scratch)
            exported = model.export(folder, merged=args.merged, repo=repo)
            base = model.checkpoint.meta if model.checkpoint else {}
            print(f"exported {args.run} ({model.recipe}) to {folder}:")
            if exported.merged is not None:
                size = size_text(exported.merged.stat().st_size)
                print(f"  {exported.merged.name}  {size}  the merged open_clip model (fp32); load with")
                for line in exported.open_clip_lines():
                    print(f"      {line}")
            elif exported.why_no_merged and args.merged is not False:
                print(f"  no merged open_clip file: {exported.why_no_merged}")
            size = size_text(exported.delta.stat().st_size)
            print(
                f"  {exported.delta.name}  {size}  the trained tensors, onto {base.get('model')} / "
                f"{base.get('pretrained')} ({base.get('activation')})" + ("; load with" if args.out else "")
            )
            if args.out:
                print(f'      clipfit.load("{folder}")')
            print("  README.md  the model card")
            if repo is not None:
                url = hub.push_folder(folder, repo, private=args.private or None)
                print(f'pushed to {url}; load with clipfit.load("hf-hub:{repo}")')
        return 0

    return run_command(body)


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
