"""``clipfit-analyze``: the paper's analyses regenerated from checkpoints, and a figure report.

Examples::

    clipfit-analyze param-change runs/shapes/base2new/clipfit/shots16/seed1 --out reports/param-change
    clipfit-analyze param-change runs/lam8/.../seed1 runs/lam0/.../seed1 --labels "λ=8" "λ=0"
    clipfit-analyze param-change output/dtd/prompt_learner/model.pth.tar-100 --pretrained ViT-B-16:openai
    clipfit-analyze grad-sums runs/shapes/base2new/clipfit/shots16/seed1 --all-candidates --batches 16
    clipfit-analyze tsne runs/shapes/base2new/clipfit/shots16/seed1 --max-classes 10
    clipfit-analyze rep-change runs/shapes/base2new/clipfit/shots16/seed1 --max-images 512
    clipfit-analyze results runs/ --published
    clipfit-analyze report runs/demo/shapes/base2new/clipfit/shots16/seed1 --out reports/demo

Every sub-command writes to --out (default reports/<sub-command>) a tidy CSV of its numbers, the
figure as PNG and SVG, and a JSON sidecar with the signature and the command line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from analysis.commands.common import Common, DataOptions
from analysis.commands.grad_sums import GradSumsOptions
from analysis.commands.param_change import ParamChangeOptions
from analysis.commands.rep_change import RepChangeOptions
from analysis.commands.report import ReportOptions
from analysis.commands.results import ResultsOptions
from analysis.commands.tsne import TsneOptions
from clipfit.cli.common import run_command, setup_logging

PRETRAINED_HELP = (
    "MODEL:SOURCE of the pretrained model, e.g. ViT-B-16:openai or ViT-B-16:~/.cache/clip/ViT-B-16.pt; required "
    "for original CLIPFit (Dassl) checkpoints, which do not store their starting values"
)


def _common(p: argparse.ArgumentParser, name: str, device: bool = False) -> None:
    p.add_argument("--out", default=f"reports/{name}", help=f"output folder (default reports/{name})")
    if device:
        p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and the written paths")


def _data(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (default: the run's own)")
    g.add_argument("--dataset", help="registered dataset (needed for original CLIPFit checkpoints)")
    g.add_argument("--data-root", help="folder holding the dataset folders")
    g.add_argument("--setting", choices=("base2new", "fewshot"), help="label spaces: base/new or all classes")
    g.add_argument("--shots", type=int, help="few-shot draw (grad-sums on the train split)")
    g.add_argument("--seed", type=int, help="seed of the few-shot draw and batch order")
    g.add_argument("--template", help="prompt template with one {}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipfit-analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("param-change", help="per-layer change from the pretrained values (paper Fig. 3, 4 right)")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="run directory, checkpoint file, or Dassl checkpoint")
    p.add_argument("--labels", nargs="+", help="one label per checkpoint (default: recipe, λ, or the differing path)")
    p.add_argument("--pretrained", help=PRETRAINED_HELP)
    p.add_argument("--recipe", default="clipfit", help="tensors an original CLIPFit run trained (default clipfit)")
    p.add_argument(
        "--measure",
        default="sq_change",
        choices=("sq_change", "l2_change", "rel_change"),
        help="what the figure plots (all three are in the CSV; default sq_change, the paper's)",
    )
    _common(p, "param-change")

    p = sub.add_parser("grad-sums", help="squared-gradient sums per tensor over N batches (paper Fig. 4 left)")
    p.add_argument("checkpoint", nargs="?", metavar="CKPT", help="a run (default: the pretrained model)")
    p.add_argument("--pretrained", help=PRETRAINED_HELP + "; without CKPT, the model to measure")
    p.add_argument("--recipe", help="recipe whose tensors are marked (default: the run's, else clipfit)")
    p.add_argument("--state", choices=("init", "final"), default="init", help="pretrained (init) or fine-tuned values")
    p.add_argument("--split", choices=("train", "val", "test"), default="train", help="data (default: the train draw)")
    p.add_argument("--batches", type=int, default=8, help="number of batches (default 8)")
    p.add_argument("--batch-size", type=int, help="images per batch (default: the run's, 32)")
    p.add_argument("--reg-weight", type=float, help="lambda of the regulariser (default: the run's)")
    p.add_argument("--all-candidates", action="store_true", help="every bias and LayerNorm tensor of both towers")
    p.add_argument("--top", type=int, default=25, help="tensors in the ranked figure (default 25)")
    p.add_argument("--layers", help="layers.jsonl or its run directory, for per-step curves (default: CKPT's)")
    _data(p)
    _common(p, "grad-sums", device=True)

    p = sub.add_parser("tsne", help="t-SNE of zero-shot vs fine-tuned image features (paper Fig. 5)")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--pretrained", help=PRETRAINED_HELP)
    p.add_argument("--recipe", default="clipfit", help="tensors an original CLIPFit run trained")
    p.add_argument("--subset", choices=("base", "new", "all"), help="label space (default: the one trained on)")
    p.add_argument("--max-classes", type=int, default=10, help="classes shown (default 10)")
    p.add_argument("--max-images", type=int, default=400, help="test images at most (default 400)")
    p.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (default 30)")
    p.add_argument("--tsne-seed", type=int, default=0, help="t-SNE random state (default 0)")
    p.add_argument("--knn", type=int, default=5, help="k of the k-NN accuracy (default 5)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    _data(p)
    _common(p, "tsne", device=True)

    p = sub.add_parser("rep-change", help="linear CKA of each block, pretrained vs fine-tuned")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--pretrained", help=PRETRAINED_HELP)
    p.add_argument("--recipe", default="clipfit", help="tensors an original CLIPFit run trained")
    p.add_argument("--subset", choices=("base", "new", "all"), help="label space of the test images")
    p.add_argument("--max-images", type=int, default=512, help="test images at most (default 512)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    _data(p)
    _common(p, "rep-change", device=True)

    p = sub.add_parser("results", help="result tables over seeds (Markdown, CSV, LaTeX) and figures")
    p.add_argument("root", metavar="RUN_ROOT", help="folder searched recursively for results.json")
    p.add_argument("--readme", metavar="FILE", help="rewrite the generated results block of this Markdown file")
    p.add_argument("--readme-figures", default="docs/figures", help="where --readme copies its figures")
    p.add_argument("--published", action="store_true", help="add the published ViT-B/16 numbers (PAPER.md 8)")
    _common(p, "results")

    p = sub.add_parser("report", help="self-contained HTML + Markdown report of one or more runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--title", help="report title")
    p.add_argument("--pretrained", help=PRETRAINED_HELP)
    p.add_argument("--no-data-passes", action="store_true", help="skip grad-sums, tsne and rep-change")
    p.add_argument("--max-images", type=int, default=400, help="test images for tsne and rep-change (default 400)")
    p.add_argument("--max-classes", type=int, default=10, help="classes in the t-SNE (default 10)")
    p.add_argument("--batches", type=int, default=4, help="batches for the gradient sums (default 4)")
    p.add_argument("--published", action="store_true", help="add the published ViT-B/16 numbers")
    _common(p, "report", device=True)
    return parser


def _data_options(args: argparse.Namespace) -> DataOptions:
    return DataOptions(args.dataset, args.data_root, args.setting, args.shots, args.seed, args.template)


def _configure_logging(args: argparse.Namespace) -> None:
    """clipfit's console handlers, shared by the analysis loggers."""
    setup_logging(args.verbose, args.quiet)
    source, target = logging.getLogger("clipfit"), logging.getLogger("analysis")
    for handler in list(target.handlers):
        if getattr(handler, "_clipfit_console", False):
            target.removeHandler(handler)
    for handler in source.handlers:
        if getattr(handler, "_clipfit_console", False):
            target.addHandler(handler)
    target.setLevel(logging.DEBUG)
    target.propagate = False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    _configure_logging(args)
    common = Common(Path(args.out), argv, getattr(args, "device", "auto"))

    def body() -> int:
        from analysis.commands import grad_sums, param_change, rep_change, report, results, tsne

        if args.command == "param-change":
            opts = ParamChangeOptions(args.checkpoints, args.labels, args.pretrained, args.recipe, args.measure)
            param_change.execute(opts, common)
        elif args.command == "grad-sums":
            opts = GradSumsOptions(
                args.checkpoint,
                args.pretrained,
                args.recipe,
                args.state,
                _data_options(args),
                args.split,
                args.batches,
                args.batch_size,
                args.reg_weight,
                args.all_candidates,
                args.top,
                args.layers,
            )
            grad_sums.execute(opts, common)
        elif args.command == "tsne":
            opts = TsneOptions(
                args.checkpoint,
                args.pretrained,
                args.recipe,
                _data_options(args),
                args.subset,
                args.max_classes,
                args.max_images,
                args.perplexity,
                args.tsne_seed,
                args.knn,
                args.batch_size,
            )
            tsne.execute(opts, common)
        elif args.command == "rep-change":
            opts = RepChangeOptions(
                args.checkpoint,
                args.pretrained,
                args.recipe,
                _data_options(args),
                args.subset,
                args.max_images,
                args.batch_size,
            )
            rep_change.execute(opts, common)
        elif args.command == "results":
            results.execute(ResultsOptions(args.root, args.published, args.readme, args.readme_figures), common)
        elif args.command == "report":
            opts = ReportOptions(
                args.run_dirs,
                args.title,
                args.pretrained,
                not args.no_data_passes,
                args.max_images,
                args.max_classes,
                args.batches,
                args.published,
            )
            report.execute(opts, common)
        return 0

    return run_command(body)


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
