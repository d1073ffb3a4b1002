"""``clipfit-analyze results``: every results.json under a tree as tables over seeds, and their figures.

The tables are :mod:`analysis.results` (base-to-new: Base and New mean ± std over seeds and
HM = 2BN / (B + N) of the means; few-shot accuracy against shots; transfer targets), rendered as
CSV, Markdown and LaTeX (:mod:`analysis.results_text`), each with a figure; ``--readme`` rewrites
the generated results block of a Markdown file, so a README's numbers are never typed by hand.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.commands.bundle import announce, write_figure
from analysis.commands.common import Common, signature
from analysis.errors import AnalysisError
from analysis.outputs import OutputDir
from analysis.paper import paper_table, self_check_table
from analysis.results import base2new_table, eval_table, fewshot_table, provenance, read_runs, summary
from analysis.results_text import cells, to_latex, to_markdown
from figures.report import ReportFigure, ReportTable
from figures.results import (
    caption_base2new,
    caption_base_new_scatter,
    caption_eval,
    caption_fewshot,
    draw_base2new,
    draw_base_new_scatter,
    draw_eval,
    draw_fewshot,
    scatter_rows,
)

logger = logging.getLogger(__name__)

README_BEGIN = "<!-- clipfit-analyze results: begin (generated; do not edit by hand) -->"
README_END = "<!-- clipfit-analyze results: end -->"


@dataclass
class ResultsOptions:
    """Which runs ``results`` aggregates and where the tables go."""

    root: str  # a folder of runs (searched recursively for results.json)
    published: bool = False  # append the published numbers of PAPER.md section 8
    readme: str | None = None  # a Markdown file whose results block is rewritten (see write_readme_block)
    readme_figures: str = "docs/figures"  # where the figures the block shows are copied (relative to cwd)


OPTIONS = ResultsOptions


@dataclass
class ResultsOutput:
    """What ``results`` wrote, for printing, the README block and the report."""

    figures: list[ReportFigure]  # the figure of each table kind present (and the base-to-new scatter)
    tables: list[ReportTable]  # each table kind present, as rendered cells
    runs: pd.DataFrame  # RESULTS_RUNS
    markdown: list[str] = field(default_factory=list)  # each table as Markdown


def print_results(output: ResultsOutput) -> None:
    """The Markdown tables, then where the files went."""
    for table, text in zip(output.tables, output.markdown, strict=True):
        print(f"## {table.title}\n\n{text}")
    announce(output.figures)


def results_from_runs(runs: pd.DataFrame, published: bool, common: Common, signatures: list[str]) -> ResultsOutput:
    """Write the results tables (CSV, Markdown, LaTeX) and figures of a RESULTS_RUNS table."""
    out = OutputDir(common.out, common.argv, "results")
    runs_csv = out.table(runs, "results_runs")
    kinds = {
        "base2new": (base2new_table(runs, published), draw_base2new, caption_base2new, "Base-to-new generalisation"),
        "fewshot": (fewshot_table(runs, published), draw_fewshot, caption_fewshot, "Few-shot accuracy"),
        "eval": (eval_table(runs), draw_eval, caption_eval, "Cross-dataset transfer and domain generalisation"),
    }
    figure_titles = {
        "base2new": "Base / New / HM accuracy per dataset",
        "fewshot": "Few-shot accuracy against shots",
        "eval": "Accuracy on the transfer targets",
    }
    figures, tables, markdown = [], [], []
    for kind, (table, draw, caption, title) in kinds.items():
        if table.empty or (table["source"] == "").sum() == 0:
            continue
        stem = f"results_{kind}"
        markdown.append(to_markdown(kind, table))
        md = out.text(markdown[-1], f"{stem}.md")
        tex = out.text(to_latex(kind, table), f"{stem}.tex")
        figure = write_figure(
            out,
            stem,
            table,
            draw(table),
            figure_titles[kind],
            caption(table),
            signatures,
            inputs=[runs_csv],
            extra=[md, tex],
        )
        headers, rows, notes = cells(kind, table)
        csv = figure.data[0]  # the bundle lists its CSV first
        tables.append(ReportTable(stem, title, headers, rows, notes, [csv, md, tex]))
        figures.append(figure)
        if kind == "base2new":  # the scatter's data: the rows it plots (the Average, or the only dataset)
            plotted = scatter_rows(table)
            figures.append(
                write_figure(
                    out,
                    f"{stem}_scatter",
                    plotted,
                    draw_base_new_scatter(plotted),
                    "New against Base accuracy",
                    caption_base_new_scatter(plotted),
                    signatures,
                    inputs=[runs_csv],
                )
            )
    if not tables:
        raise AnalysisError("the results found hold no base-to-new, few-shot or transfer numbers")
    comparisons = [("self_check", self_check_table(runs), "Zero-shot self-check against published numbers")]
    if published:
        # the report names methods by configuration ("clipfit λ=8"): the recipe each trained picks the paper's row
        recipes = runs.groupby("method")["recipe"].unique()
        recipes = {m: r[0] for m, r in recipes.items() if len(r) == 1}
        comparisons.append(("paper", paper_table(kinds["base2new"][0], recipes), "Against the paper's averages"))
    for kind, table, title in comparisons:
        if table.empty:
            continue
        stem = f"results_{kind}"
        csv = out.table(table, stem)
        markdown.append(to_markdown(kind, table))
        md = out.text(markdown[-1], f"{stem}.md")
        tex = out.text(to_latex(kind, table), f"{stem}.tex")
        side = out.sidecar(stem, signatures, [csv, md, tex, runs_csv])
        headers, rows, notes = cells(kind, table)
        tables.append(ReportTable(stem, title, headers, rows, notes, [csv, md, tex, side]))
    return ResultsOutput(figures, tables, runs, markdown)


def run_results(opts: ResultsOptions, common: Common) -> ResultsOutput:
    """Every results.json under a tree, aggregated over seeds, as CSV, Markdown, LaTeX and figures."""
    runs = read_runs(opts.root)
    signatures = sorted(
        {r.signature or signature(r.model, r.pretrained, r.recipe, r.dataset, r.seed) for r in runs.itertuples()}
    )
    output = results_from_runs(runs, opts.published, common, signatures)
    logger.debug("results: %s", summary(runs))
    if opts.readme:
        write_readme_block(Path(opts.readme), output, Path(opts.readme_figures), opts.root)
    return output


def write_readme_block(readme: Path, output: ResultsOutput, figures_dir: Path, root: str) -> None:
    """Replace the block between README_BEGIN and README_END of ``readme`` with the results tables and
    figures (copied into ``figures_dir``), so a README's numbers are generated, never typed."""
    try:
        text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise AnalysisError(f"cannot read --readme {readme}: {exc}") from None
    if README_BEGIN not in text or README_END not in text:
        raise AnalysisError(
            f"{readme} has no results block: add the two lines\n{README_BEGIN}\n{README_END}\nwhere it should go"
        )
    figures_dir.mkdir(parents=True, exist_ok=True)
    parts = [
        f"Generated by `clipfit-analyze results {root} --readme {readme.name}` from {len(output.runs)} runs. "
        + provenance(output.runs)
    ]
    for table, markdown in zip(output.tables, output.markdown, strict=True):
        parts += [f"**{table.title}** (mean ± std over seeds)", markdown.strip()]
    for figure in output.figures:
        target = figures_dir / figure.png.name
        shutil.copyfile(figure.png, target)
        link = os.path.relpath(target, readme.resolve().parent if readme.parent != Path() else Path.cwd())
        parts += [f"![{figure.title}]({link})", f"*{figure.caption}*"]
    before, rest = text.split(README_BEGIN, 1)
    after = rest.split(README_END, 1)[1]
    readme.write_text(before + README_BEGIN + "\n" + "\n\n".join(parts) + "\n" + README_END + after)
    print(f"updated {readme} ({len(output.tables)} tables, {len(output.figures)} figures in {figures_dir})")


def execute(opts: ResultsOptions, common: Common) -> None:
    """Run, then print the tables and where the files went."""
    print_results(run_results(opts, common))
