"""Imports point one way: analysis/ and figures/ never reach clipfit's orchestration or CLIs.

analysis/ measures trained models through clipfit's building blocks (run directories, checkpoints,
models, the training objective) but not through what runs training or parses command lines;
figures/ draws tables and knows only plotting libraries, the table schemas and the Markdown
renderer. The files are parsed with ``ast``, never imported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# clipfit's orchestration and command lines (each with its submodules)
ORCHESTRATION = ("clipfit.run", "clipfit.methods", "clipfit.engine", "clipfit.cli")
# what figures/ may import: these top-level packages, and these two analysis modules
FIGURES_PACKAGES = {"__future__", "base64", "contextlib", "collections", "dataclasses", "html", "json", "math",
                    "pathlib", "typing", "pandas", "numpy", "matplotlib", "seaborn", "figures"}  # fmt: skip
FIGURES_ANALYSIS = {"analysis.schemas", "analysis.markdown"}


def _package(file: Path) -> str:
    """The dotted package a file's relative imports start from."""
    parts = list(file.relative_to(REPO).with_suffix("").parts)
    parts.pop()  # the module itself (for __init__.py, the package remains)
    return ".".join(parts)


def imports(source: str, package: str) -> Iterator[tuple[str, list[str]]]:
    """(module, imported names) of every import in ``source``, relative ones made absolute.

    Covers ``import a.b``, ``from a import b`` (b may itself be a module, so it is reported too),
    relative imports, and ``importlib.import_module`` / ``__import__`` with a literal name or an
    f-string's literal prefix; imports inside functions count like top-level ones.
    """
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            yield module, [a.name for a in node.names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if name in ("import_module", "__import__"):
                if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                    arg = arg.values[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    yield arg.value.rstrip("."), []


def _forbidden(module: str) -> bool:
    return any(module == o or module.startswith(o + ".") for o in ORCHESTRATION)


def _orchestration(module: str, names: list[str]) -> list[str]:
    """The orchestration or CLI module an import reaches: ``module``, else ``module.name`` of an imported name."""
    if _forbidden(module):
        return [module]
    return [f"{module}.{n}" for n in names if _forbidden(f"{module}.{n}")]


def _files(folder: str) -> list[Path]:
    files = sorted((REPO / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    return files


@pytest.mark.parametrize("folder", ["analysis", "figures"])
def test_analysis_and_figures_do_not_import_orchestration_or_clis(folder):
    found = [
        f"{file.relative_to(REPO)}: {bad}"
        for file in _files(folder)
        for module, names in imports(file.read_text(encoding="utf-8"), _package(file))
        for bad in _orchestration(module, names)
    ]
    assert not found, "analysis/ and figures/ must not import clipfit's orchestration or CLIs:\n" + "\n".join(found)


def test_figures_import_only_plotting_libraries_the_schemas_and_the_markdown_renderer():
    for file in _files("figures"):
        for module, _ in imports(file.read_text(encoding="utf-8"), _package(file)):
            allowed = module in FIGURES_ANALYSIS or module.split(".")[0] in FIGURES_PACKAGES
            assert allowed, f"{file.relative_to(REPO)}: {module}"


@pytest.mark.parametrize(
    ("source", "package", "found"),
    [
        ("from clipfit import engine, models", "analysis", ["clipfit.engine"]),
        ("import clipfit.cli.train as train", "analysis", ["clipfit.cli.train"]),
        ("def f():\n    from clipfit.run import train_run", "analysis.commands", ["clipfit.run"]),
        ("from ..methods import method_of", "clipfit.data", ["clipfit.methods"]),
        ("importlib.import_module(f'clipfit.cli.{name}')", "analysis", ["clipfit.cli"]),
        ("from clipfit.runtime import DistEnv\nfrom clipfit.rundir import load_run", "analysis", []),
        ("from . import schemas", "analysis", []),
    ],
)
def test_the_checker_finds_every_form_of_import(source, package, found):
    assert [bad for module, names in imports(source, package) for bad in _orchestration(module, names)] == found


def test_relative_imports_resolve_from_the_files_package():
    assert _package(REPO / "analysis" / "commands" / "results.py") == "analysis.commands"
    assert _package(REPO / "analysis" / "commands" / "__init__.py") == "analysis.commands"
    assert list(imports("from .common import x", "analysis.commands")) == [("analysis.commands.common", ["x"])]
