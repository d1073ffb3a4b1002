"""``clipfit-analyze``: the paper's analyses regenerated from checkpoints, and a figure report.

Examples::

    clipfit-analyze param-change runs/shapes/base2new/clipfit/shots16/seed1 --out reports/param-change
    clipfit-analyze param-change runs/lam8/.../seed1 runs/lam0/.../seed1 --labels "λ=8" "λ=0"
    clipfit-analyze param-change output/dtd/prompt_learner/model.pth.tar-100 --pretrained ViT-B-16:openai
    clipfit-analyze grad-sums runs/shapes/base2new/clipfit/shots16/seed1 --all-candidates --batches 16
    clipfit-analyze tsne runs/shapes/base2new/clipfit/shots16/seed1 --max-classes 10
    clipfit-analyze rep-change runs/shapes/base2new/clipfit/shots16/seed1 --max-images 512
    clipfit-analyze grad-cos runs/shapes/base2new/clipfit/shots16/seed1
    clipfit-analyze channels runs/shapes/base2new/clipfit/shots16/seed1
    clipfit-analyze per-class runs/shapes/base2new/clipfit/shots16/seed1
    clipfit-analyze training-curves runs/shapes/base2new/clipfit/shots16/seed1
    clipfit-analyze param-change --weights ViT-B-16:openai ViT-B-16:wise-ft.safetensors
    clipfit-analyze results runs/ --published
    clipfit-analyze report runs/demo/shapes/base2new/clipfit/shots16/seed1 --out reports/demo
    clipfit-analyze report runs/sweep --out reports/sweep     # every run under runs/sweep, compared

Every sub-command writes to --out (default reports/<sub-command>) a tidy CSV of its numbers, the
figure as PNG and SVG, and a JSON sidecar with the signature and the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar, get_type_hints

T = TypeVar("T")

PRETRAINED_HELP = (
    "MODEL:SOURCE of the pretrained model, e.g. ViT-B-16:openai or ViT-B-16:~/.cache/clip/ViT-B-16.pt; required "
    "for original CLIPFit (Dassl) checkpoints, which do not store their starting values"
)


def _number(kind: type, low: float, strict: bool = False) -> Callable[[str], Any]:
    """An argparse type: a finite ``kind`` (int or float) >= ``low`` (> ``low`` when ``strict``)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            what = "an integer" if kind is int else "a finite number"
            raise argparse.ArgumentTypeError(f"must be {what} {'>' if strict else '>='} {low:g}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


POSITIVE = _number(int, 1)  # counts and sizes
NON_NEGATIVE = _number(int, 0)  # seeds
WEIGHT = _number(float, 0)  # lambda


def _model_source(text: str) -> str:
    """``MODEL:SOURCE`` as --pretrained takes it (checked here, so a malformed value is never ignored)."""
    model, sep, source = text.partition(":")
    if not (sep and model and source):
        raise argparse.ArgumentTypeError(f"expected MODEL:SOURCE such as ViT-B-16:openai, got {text!r}")
    return text


# Every flag's dest is the name of the options field it fills (see options_from); the command
# modules, which import torch and matplotlib, are imported only once a sub-command runs.


def _common(p: argparse.ArgumentParser, name: str, device: bool = False) -> None:
    """--out, -v/-q, and --device where the sub-command runs a model (the fields of Common)."""
    p.add_argument("--out", type=Path, default=f"reports/{name}", help=f"output folder (default reports/{name})")
    if device:
        p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1")
    else:
        p.set_defaults(device="auto")  # reads tables and checkpoints only
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and the written paths")


def _weights(p: argparse.ArgumentParser) -> None:
    """The field ``weights``: two weight files of one open_clip architecture instead of CKPT."""
    p.add_argument(
        "--weights",
        nargs=2,
        metavar=("ARCH:A", "ARCH:B"),
        help="compare every parameter of two weight files of one architecture (open_clip state dict, OpenAI "
        "TorchScript archive or open_clip tag), A as the start: e.g. ViT-B-16:openai ViT-B-16:finetuned.safetensors",
    )


def _data(p: argparse.ArgumentParser) -> None:
    """The fields of DataOptions."""
    g = p.add_argument_group("data (default: the run's own)")
    g.add_argument("--dataset", help="registered dataset (needed for original CLIPFit checkpoints)")
    g.add_argument("--data-root", help="folder holding the dataset folders")
    # validated with the run's settings (clipfit.config.SETTINGS), not here: --help imports no clipfit
    g.add_argument("--setting", help="label spaces: base2new (base/new) or fewshot (all classes)")
    g.add_argument("--shots", type=POSITIVE, help="few-shot draw (grad-sums on the train split)")
    g.add_argument("--seed", type=NON_NEGATIVE, help="seed of the few-shot draw and batch order")
    g.add_argument("--template", help="prompt template with one {}")


def _param_change(p: argparse.ArgumentParser) -> None:
    """The fields of ParamChangeOptions."""
    p.add_argument("checkpoints", nargs="*", metavar="CKPT", help="run directory, checkpoint file, or Dassl checkpoint")
    _weights(p)
    p.add_argument("--labels", nargs="+", help="one label per checkpoint (default: recipe, λ, or the differing path)")
    p.add_argument("--pretrained", type=_model_source, help=PRETRAINED_HELP)
    p.add_argument("--recipe", default="clipfit", help="tensors an original CLIPFit run trained (default clipfit)")
    p.add_argument(
        "--measure",
        default="sq_change",
        choices=("sq_change", "l2_change", "rel_change"),
        help="what the figure plots (all three are in the CSV; default sq_change, the paper's)",
    )
    _common(p, "param-change")


def _grad_sums(p: argparse.ArgumentParser) -> None:
    """The fields of GradSumsOptions."""
    p.add_argument("checkpoint", nargs="?", metavar="CKPT", help="a run (default: the pretrained model)")
    p.add_argument("--pretrained", type=_model_source, help=PRETRAINED_HELP + "; without CKPT, the model to measure")
    p.add_argument("--recipe", help="recipe whose tensors are marked (default: the run's, else clipfit)")
    p.add_argument("--state", choices=("init", "final"), default="init", help="pretrained (init) or fine-tuned values")
    p.add_argument("--split", choices=("train", "val", "test"), default="train", help="data (default: the train draw)")
    p.add_argument("--batches", type=POSITIVE, default=8, help="number of batches (default 8)")
    p.add_argument("--batch-size", type=POSITIVE, help="images per batch (default: the run's, 32)")
    p.add_argument("--reg-weight", type=WEIGHT, help="lambda of the regulariser (default: the run's)")
    p.add_argument("--all-candidates", action="store_true", help="every bias and LayerNorm tensor of both towers")
    p.add_argument("--top", type=POSITIVE, default=25, help="tensors in the ranked figure (default 25)")
    p.add_argument("--layers", help="layers.jsonl or its run directory, for per-step curves (default: CKPT's)")
    p.add_argument("--no-curves", dest="curves", action="store_false", help="skip the per-step curves")
    _data(p)
    _common(p, "grad-sums", device=True)


def _tsne(p: argparse.ArgumentParser) -> None:
    """The fields of TsneOptions."""
    _runs(p)
    p.add_argument("--subset", choices=("base", "new", "all"), help="label space (default: the one trained on)")
    p.add_argument(
        "--max-classes", type=POSITIVE, default=10, help="classes shown, spread over the label space (default 10)"
    )
    p.add_argument("--max-images", type=POSITIVE, default=400, help="test images at most (default 400)")
    p.add_argument(
        "--perplexity", type=_number(float, 0, strict=True), default=30.0, help="t-SNE perplexity (default 30)"
    )
    p.add_argument("--tsne-seed", type=NON_NEGATIVE, default=0, help="t-SNE random state (default 0)")
    p.add_argument("--knn", type=POSITIVE, default=5, help="k of the k-NN accuracy (default 5)")
    p.add_argument("--batch-size", type=POSITIVE, default=256, help="images per forward pass (default 256)")
    _data(p)
    _common(p, "tsne", device=True)


def _rep_change(p: argparse.ArgumentParser) -> None:
    """The fields of RepChangeOptions."""
    _runs(p)
    p.add_argument("--subset", choices=("base", "new", "all"), help="label space of the test images")
    p.add_argument("--max-images", type=POSITIVE, default=512, help="test images at most (default 512)")
    p.add_argument("--batch-size", type=POSITIVE, default=256, help="images per forward pass (default 256)")
    _data(p)
    _common(p, "rep-change", device=True)


def _runs(p: argparse.ArgumentParser) -> None:
    """The fields ``checkpoints`` and ``weights`` of the analyses that accept several runs."""
    p.add_argument(
        "checkpoints", nargs="*", metavar="CKPT", help="run directories (seeds of one configuration are averaged)"
    )
    _weights(p)
    p.add_argument("--pretrained", type=_model_source, help=PRETRAINED_HELP)
    p.add_argument("--recipe", default="clipfit", help="tensors an original CLIPFit run trained")


def _per_class(p: argparse.ArgumentParser) -> None:
    """The fields of PerClassOptions."""
    _runs(p)
    p.add_argument("--max-images", type=POSITIVE, help="test images per label space at most (default: all)")
    p.add_argument("--worst", type=POSITIVE, default=5, help="classes whose confusions are shown (default 5)")
    p.add_argument("--batch-size", type=POSITIVE, default=256, help="images per forward pass (default 256)")
    _data(p)
    _common(p, "per-class", device=True)


def _channels(p: argparse.ArgumentParser) -> None:
    """The fields of ChannelsOptions."""
    _runs(p)
    p.add_argument(
        "--max-tensors",
        type=NON_NEGATIVE,
        default=16,
        help="tensors whose every channel goes into channels.csv, the most changed (default 16; 0: all)",
    )
    _common(p, "channels")


def _grad_cos(p: argparse.ArgumentParser) -> None:
    """The fields of GradCosOptions."""
    p.add_argument("checkpoints", nargs="+", metavar="RUN_DIR", help="run directories (their layers.jsonl)")
    _common(p, "grad-cos")


def _training_curves(p: argparse.ArgumentParser) -> None:
    """The fields of TrainingCurvesOptions."""
    p.add_argument(
        "checkpoints", nargs="+", metavar="RUN_DIR", help="run directories (their metrics.jsonl), or sweep folders"
    )
    _common(p, "training-curves")


def _results(p: argparse.ArgumentParser) -> None:
    """The fields of ResultsOptions."""
    p.add_argument("root", metavar="RUN_ROOT", help="folder searched recursively for results.json")
    p.add_argument("--readme", metavar="FILE", help="rewrite the generated results block of this Markdown file")
    p.add_argument("--readme-figures", default="docs/figures", help="where --readme copies its figures")
    p.add_argument(
        "--published",
        action="store_true",
        help="add the published ViT-B/16 numbers (as the ClipFit paper reports them)",
    )
    _common(p, "results")


def _report(p: argparse.ArgumentParser) -> None:
    """The fields of ReportOptions."""
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories, or sweep folders (every run under)")
    p.add_argument("--title", help="report title")
    p.add_argument("--pretrained", type=_model_source, help=PRETRAINED_HELP)
    p.add_argument(
        "--no-data-passes",
        dest="data_passes",
        action="store_false",
        help="skip the passes over images: grad-sums screening, per-class, tsne and rep-change",
    )
    p.add_argument("--max-images", type=POSITIVE, default=400, help="test images for tsne and rep-change (default 400)")
    p.add_argument("--max-classes", type=POSITIVE, default=10, help="classes in the t-SNE (default 10)")
    p.add_argument(
        "--class-images", type=POSITIVE, default=800, help="test images per label space for per-class (default 800)"
    )
    p.add_argument("--batches", type=POSITIVE, default=4, help="batches for the gradient sums (default 4)")
    p.add_argument("--published", action="store_true", help="add the published ViT-B/16 numbers")
    _common(p, "report", device=True)


@dataclasses.dataclass(frozen=True)
class Command:
    """One sub-command: where it runs and what its help says."""

    module: str  # analysis.commands.<module>: OPTIONS (its options dataclass) and execute(opts, common)
    summary: str  # the line in clipfit-analyze --help
    arguments: Callable[[argparse.ArgumentParser], None]  # adds one flag per field of OPTIONS


COMMANDS: dict[str, Command] = {
    "param-change": Command(
        "param_change", "per-layer change from the pretrained values (paper Fig. 3, 4 right)", _param_change
    ),
    "grad-sums": Command(
        "grad_sums",
        "squared gradients per tensor: over training (paper Fig. 4 left) and a screening over N batches",
        _grad_sums,
    ),
    "tsne": Command("tsne", "t-SNE of zero-shot vs fine-tuned image features (paper Fig. 5)", _tsne),
    "rep-change": Command("rep_change", "linear CKA of each block, pretrained vs fine-tuned", _rep_change),
    "per-class": Command(
        "per_class", "zero-shot vs fine-tuned accuracy of every class, confusions, text-feature movement", _per_class
    ),
    "channels": Command(
        "channels",
        "per-channel change inside the 1-D tensors: concentration and the channels that moved most",
        _channels,
    ),
    "grad-cos": Command(
        "grad_cos", "gradient consistency: cosine between successive gradients during training", _grad_cos
    ),
    "training-curves": Command(
        "training_curves", "loss, its terms and the training and validation accuracy per step", _training_curves
    ),
    "results": Command("results", "result tables over seeds (Markdown, CSV, LaTeX) and figures", _results),
    "report": Command("report", "self-contained HTML + Markdown report of one or more runs", _report),
}


class _Version(argparse.Action):
    """``--version`` as every clipfit command prints it, importing clipfit only when asked (``--help`` imports none)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        import clipfit

        print(f"{parser.prog} (clipfit {clipfit.__version__})")  # on standard output, as argparse's version action
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """argparse with a two-line error (the short usage and the message); clipfit.console.ArgumentParser's twin,
    copied because ``--help`` imports no clipfit module."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"usage: {self.prog} [options]  ({self.prog} --help lists them)\n{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="clipfit-analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.arguments(sub.add_parser(name, help=command.summary, description=command.summary))
    return parser


def options_from(cls: type[T], args: argparse.Namespace, **given: Any) -> T:
    """A ``cls`` dataclass filled by field name: ``given[name]``, else ``args.<name>``.

    A field whose type is itself a dataclass (``data: DataOptions``) is filled the same way from the
    same ``args``. Nothing depends on the order of the fields or of the flags.

    Raises:
        TypeError: a field has no argument of its name (a flag whose dest is not the field's name,
            or a field its sub-command does not offer): a bug of the parser, not of the input.
    """
    hints = get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in given:
            values[f.name] = given[f.name]
        elif isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name]):
            values[f.name] = options_from(hints[f.name], args)
        elif hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
        else:
            raise TypeError(f"{cls.__name__}.{f.name} has no command-line argument (no argparse dest {f.name!r})")
    return cls(**values)


def _configure_logging(args: argparse.Namespace, setup_logging: Callable[[int, bool], None]) -> None:
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
    from analysis.commands import common  # imports torch and clipfit: only once the arguments parsed

    _configure_logging(args, common.setup_logging)

    def body() -> int:
        common.check_output_folder(args.out, "--out")
        module = importlib.import_module(f"analysis.commands.{COMMANDS[args.command].module}")
        module.execute(options_from(module.OPTIONS, args), options_from(common.Common, args, argv=argv))
        return 0

    return common.run_command(body)


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
