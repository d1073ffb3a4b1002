"""clipfit-analyze's arguments fill the option dataclasses by field name, and --help stays light."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from analysis.cli import COMMANDS, build_parser, options_from
from analysis.commands.common import Common, DataOptions

# dests every sub-command has that fill no options field: argparse's own and the logging flags
NOT_OPTIONS = {"help", "verbose", "quiet"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _field_names(cls: type) -> set[str]:
    """The fields of ``cls``, a nested dataclass field replaced by its own fields."""
    hints = typing.get_type_hints(cls)
    names = set()
    for f in dataclasses.fields(cls):
        nested = hints[f.name]
        names |= _field_names(nested) if isinstance(nested, type) and dataclasses.is_dataclass(nested) else {f.name}
    return names


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_field_is_a_flag_of_its_sub_command_and_every_flag_a_field(name):
    options = importlib.import_module(f"analysis.commands.{COMMANDS[name].module}").OPTIONS
    sub = _subparsers()[name]
    dests = ({a.dest for a in sub._actions} | set(sub._defaults)) - NOT_OPTIONS  # --device without a flag: auto
    expected = _field_names(options) | (_field_names(Common) - {"argv"})
    assert dests == expected, (
        f"{name}: flags without a field {dests - expected}, fields without a flag {expected - dests}"
    )
    shown = sub.format_help()
    for action in sub._actions:  # and the help lists each of them
        assert (action.option_strings[-1] if action.option_strings else action.metavar or action.dest) in shown


def test_options_are_filled_by_name_whatever_the_order():
    @dataclasses.dataclass
    class Options:
        top: int  # declared in another order than the flags below
        data: DataOptions
        batches: int = 8

    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--top", type=int)
    for flag in ("--dataset", "--data-root", "--setting", "--shots", "--template"):
        parser.add_argument(flag)
    args = parser.parse_args(["--top", "3", "--batches", "5", "--seed", "7", "--dataset", "shapes"])
    opts = options_from(Options, args)
    assert (opts.top, opts.batches) == (3, 5)
    assert opts.data == DataOptions(dataset="shapes", seed=7)
    assert options_from(Options, args, top=1).top == 1  # a given value wins


def test_a_field_without_a_flag_is_refused():
    @dataclasses.dataclass
    class Options:
        batches: int = 8

    with pytest.raises(TypeError, match=r"Options\.batches has no command-line argument"):
        options_from(Options, argparse.Namespace(top=3))


def test_the_cli_builds_each_sub_commands_options():
    args = build_parser().parse_args(["tsne", "RUN", "--tsne-seed", "3", "--seed", "2", "--max-classes", "4"])
    from analysis.commands.tsne import TsneOptions

    opts = options_from(TsneOptions, args)
    assert (opts.checkpoints, opts.tsne_seed, opts.data.seed, opts.max_classes) == (["RUN"], 3, 2, 4)
    args = build_parser().parse_args(["report", "A", "B", "--no-data-passes", "--out", "o"])
    from analysis.commands.report import ReportOptions

    assert options_from(ReportOptions, args).data_passes is False
    assert options_from(Common, args, argv=["x"]) == Common(Path("o"), ["x"], "auto")


def test_help_imports_neither_torch_nor_matplotlib_nor_a_command_module():
    code = (
        "import sys\n"
        "from analysis.cli import main\n"
        "for argv in (['--help'], ['tsne', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'matplotlib', 'clipfit', 'figures')\n"
        "         or m.startswith('analysis.commands')]\n"
        "assert not heavy, heavy\n"
    )
    root = Path(__file__).parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--tsne-seed" in done.stdout and "param-change" in done.stdout
