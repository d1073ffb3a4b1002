"""README.md and docs/ agree with the code: generated pages, the flag table, the CSV columns, the links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from analysis import schemas
from clipfit import rundir
from clipfit.cli import eval as eval_cli
from clipfit.cli import export as export_cli
from clipfit.cli import predict as predict_cli
from clipfit.cli import train
from clipfit.data.custom import FOLDER_TREE
from clipfit.data.docs import render_datasets_page
from clipfit.data.records import DEFAULT_TEMPLATE

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
# Flags of other programs that docs/training.md shows in its torchrun command lines.
TORCHRUN_FLAGS = {"--standalone", "--nproc_per_node"}


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _long_flags(parser) -> set[str]:
    return {o for action in parser._actions for o in action.option_strings if o.startswith("--")}


def test_datasets_page_is_what_the_records_render():
    assert _text(DOCS / "datasets.md") == render_datasets_page(), (
        "docs/datasets.md differs from the dataset records (clipfit/data/catalog.py): run `make docs`"
    )


def test_training_page_names_every_flag_and_only_real_ones():
    doc = _text(DOCS / "training.md")
    flags = _long_flags(train.build_parser())
    named = set(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", doc))
    assert not flags - named, f"docs/training.md does not mention {sorted(flags - named)}"
    unknown = named - flags - _long_flags(eval_cli.build_parser()) - TORCHRUN_FLAGS
    assert not unknown, f"docs/training.md names flags that clipfit-train does not have: {sorted(unknown)}"


def test_protocols_page_names_every_flag_of_eval():
    doc = _text(DOCS / "protocols.md")
    named = set(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", doc))
    missing = _long_flags(eval_cli.build_parser()) - named
    assert not missing, f"docs/protocols.md does not mention {sorted(missing)} of clipfit-eval"


def test_datasets_page_names_every_flag_of_clipfit_data():
    import argparse

    from clipfit.cli import data as data_cli

    doc = _text(DOCS / "datasets.md")
    (sub,) = (a for a in data_cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        missing = sorted(_long_flags(command) - {"--help"} - set(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", doc)))
        assert not missing, f"docs/datasets.md (clipfit/data/docs.py) does not mention {missing} of clipfit-data {name}"


def test_using_page_names_every_flag_of_predict_and_export_and_only_real_ones():
    doc = _text(DOCS / "using.md")
    flags = _long_flags(predict_cli.build_parser()) | _long_flags(export_cli.build_parser())
    named = set(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", doc))
    assert not flags - named, f"docs/using.md does not mention {sorted(flags - named)}"
    # --report-to and --data-root are clipfit-train's; --local-dir huggingface-cli's, --logdir tensorboard's
    unknown = named - flags - _long_flags(train.build_parser()) - {"--local-dir", "--logdir"}
    assert not unknown, (
        f"docs/using.md names flags that clipfit-predict and clipfit-export do not have: {sorted(unknown)}"
    )


def test_analysis_page_names_every_flag_of_every_sub_command_and_only_real_ones():
    from analysis.cli import COMMANDS
    from analysis.cli import build_parser as analyze_parser

    doc = _text(DOCS / "analysis.md")
    section = doc.split("\n## Flags\n", 1)[1].split("\n## ", 1)[0]
    shared, *rest = re.split(r"(?m)^`([\w-]+)`:$", section)
    own = dict(zip(rest[::2], rest[1::2], strict=True))
    parser = analyze_parser()
    (sub,) = (a for a in parser._actions if a.choices and set(a.choices) == set(COMMANDS))
    assert "--version" in shared and _long_flags(parser) == {"--help", "--version"}
    documented = set()
    for name, command in sub.choices.items():
        options = {o for action in command._actions for o in action.option_strings}
        missing = [o for o in sorted(options) if not re.search(rf"`{o}[` ]", own.get(name, "") + shared)]
        assert not missing, f"docs/analysis.md (Flags) does not document {missing} of clipfit-analyze {name}"
        documented |= options
    named = set(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", section))
    assert not named - documented - {"--version"}, f"docs/analysis.md names no such flags: {named - documented}"


def _csv_rows(doc: str) -> dict[str, list[str]]:
    """First cell -> the column names of the second cell (`*layer*` kept as a token)."""
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 2 and (cells[0].endswith(".csv`") or cells[0].startswith("*layer*")):
            key = cells[0].strip("`").removesuffix(".csv") if cells[0].endswith(".csv`") else "*layer*"
            rows[key] = [token.strip().strip("`") for token in cells[1].split(",")]
    return rows


def test_analysis_page_lists_the_columns_of_every_table():
    rows = _csv_rows(_text(DOCS / "analysis.md"))
    assert rows.pop("*layer*") == list(schemas.LAYER)
    assert set(rows) == set(schemas.ALL), "docs/analysis.md and analysis/schemas.py ALL list different tables"
    for name, columns in rows.items():
        expanded = [c for token in columns for c in (schemas.LAYER if token == "*layer*" else (token,))]
        assert expanded == list(schemas.ALL[name]), f"docs/analysis.md: the columns of {name}.csv"


def test_own_data_page_shows_the_folder_layout_and_default_template():
    doc = _text(DOCS / "own-data.md")
    assert FOLDER_TREE in doc
    assert f"`{DEFAULT_TEMPLATE}`" in doc


def test_readme_is_short_and_starts_with_the_two_commands():
    readme = REPO / "README.md"
    assert readme.stat().st_size < 13_000, "README.md should say what a newcomer needs; references go in docs/"
    quick_start = _text(readme).split("## Quick start", 1)[1]
    assert re.match(r"\s*```\nmake demo\nmake test\n```\n", quick_start)


def test_readme_names_no_file_outside_the_repository():
    readme = _text(REPO / "README.md")
    for outside in ("PAPER.md", "DESIGN.md", "../shared"):
        assert outside not in readme


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"(?m)^#+ (.+)$", re.sub(r"(?ms)^```.*?^```", "", _text(path)))
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_at_files_of_the_repository(page):
    text = re.sub(r"(?ms)^```.*?^```", "", _text(page))  # code blocks hold commands, not links
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s) and other schemes
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        assert path.is_relative_to(REPO) and path.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{page.name} links to {target}, which has no such heading"


def test_run_directory_page_lists_exactly_the_files_of_a_run():
    listed = set(re.findall(r"^\| `([^`]+)` \|", _text(DOCS / "run-directory.md"), flags=re.MULTILINE))
    assert listed == set(rundir.RUN_FILES), "docs/run-directory.md must list the files clipfit.rundir names"


def test_architecture_page_names_only_modules_that_exist_and_every_module():
    text = _text(DOCS / "architecture.md")
    named = set(re.findall(r"`((?:clipfit|analysis|figures|benchmarks)/[\w/]+\.(?:py|sh))`", text))
    missing = sorted(p for p in named if not (REPO / p).is_file())
    assert named and not missing, f"docs/architecture.md names modules that do not exist: {missing}"
    modules = [p.relative_to(REPO) for pkg in ("clipfit", "analysis") for p in (REPO / pkg).rglob("*.py")]
    unnamed = [str(m) for m in modules if m.name != "__init__.py" and str(m) not in named and m.name not in text]
    assert not unnamed, f"docs/architecture.md does not say what these modules own: {sorted(unnamed)}"
