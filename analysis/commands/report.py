"""``clipfit-analyze report``: one self-contained figure report of one or more runs.

The report reuses the other sub-commands unchanged: the results tables of the runs that finished,
param-change of all runs (paper Fig. 3, or Fig. 4 right for runs with different λ), the per-step
curves, and, on the first run, the data passes grad-sums (the screening at the pretrained values), tsne (Fig. 5) and
rep-change (linear CKA). Each writes into its own sub-folder; ``figures.report`` assembles
``index.html``, ``report.md`` and ``report.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.commands.common import Common, recorded_results
from analysis.commands.grad_sums import GradSumsOptions, run_grad_steps, run_grad_sums
from analysis.commands.param_change import ParamChangeOptions, run_param_change
from analysis.commands.rep_change import RepChangeOptions, run_rep_change
from analysis.commands.results import results_from_runs
from analysis.commands.tsne import TsneOptions, run_tsne
from analysis.errors import AnalysisError
from analysis.results import read_runs
from analysis.sources import Source, default_labels, load_source
from clipfit.rundir import RunDir
from figures.report import ReportTable, write_report

RUN_COLUMNS = [
    "Label",
    "Run",
    "Dataset",
    "Setting",
    "Shots",
    "Seed",
    "Epochs",
    "λ",
    "Trained values",
    "Zero-shot",
    "Fine-tuned",
    "Signature",
]


@dataclass
class ReportOptions:
    """Which runs the report covers and how much the data passes read."""

    run_dirs: list[str]  # run directories (or checkpoints) to report on
    title: str | None = None  # report title (default: recipe and dataset of the first run)
    pretrained: str | None = None  # MODEL:SOURCE for original CLIPFit checkpoints
    data_passes: bool = True  # grad-sums, tsne and rep-change on the first run (they read images)
    max_images: int = 400  # cap for tsne and rep-change
    max_classes: int = 10  # classes in the t-SNE
    batches: int = 4  # grad-sums batches
    published: bool = False  # add the published numbers of PAPER.md section 8 to the results tables


OPTIONS = ReportOptions


def _run_row(source: Source, label: str) -> list[str]:
    meta, cfg = source.ckpt.meta, source.cfg
    result = recorded_results(source)
    metrics = result.get("metrics") or meta.get("metrics") or {}
    zero = result.get("zero_shot") or meta.get("zero_shot") or {}

    def fmt(values: dict) -> str:
        if "hm" in values:
            return f"{values['base_acc']:.2f} / {values['new_acc']:.2f} / {values['hm']:.2f}"
        return f"{values['acc']:.2f}" if "acc" in values else "-"

    def cell(value) -> str:
        return "-" if value is None or value == "" else str(value)

    trained = sum(t.numel() for t in source.ckpt.final.values())
    return [
        label,
        str(source.path),
        cell(meta.get("dataset")),
        cell(meta.get("setting")),
        cell(meta.get("shots")),
        cell(meta.get("seed")),
        f"{cfg.optim.epochs}" if cfg else cell(meta.get("epoch")),
        f"{source.reg_weight:g}" if cfg else "-",
        f"{trained:,d}",
        fmt(zero),
        fmt(metrics),
        source.signature,
    ]


def run_report(opts: ReportOptions, common: Common) -> Path:
    """The figure report of one or more runs; returns the path of index.html."""
    if not opts.run_dirs:
        raise AnalysisError("report needs at least one run directory")
    sources = [load_source(p, opts.pretrained) for p in opts.run_dirs]
    labels = default_labels(sources)
    out = Path(common.out).expanduser()
    sub = {
        name: Common(out / name, common.argv, common.device)
        for name in ("results", "param-change", "grad-sums", "tsne", "rep-change")
    }
    figures, tables, notes = [], [], []

    result_dirs = [s.run_dir for s in sources if s.run_dir is not None and RunDir(s.run_dir).state == "finished"]
    if result_dirs:
        runs = pd.concat([read_runs(d) for d in result_dirs], ignore_index=True).drop_duplicates()
        results = results_from_runs(runs, opts.published, sub["results"], [s.signature for s in sources])
        tables += results.tables
        figures += results.figures
    else:
        notes.append("No results.json in the given run directories (unfinished runs?): no results table.")

    figures += run_param_change(
        ParamChangeOptions([str(s.path) for s in sources], labels, opts.pretrained), sub["param-change"], sources
    )
    figures += run_grad_steps(sources, labels, sub["grad-sums"])
    if not any(s.layers_file for s in sources):
        notes.append("No layers.jsonl (not a clipfit-train run directory): no per-step curves.")

    passes = [s for s in sources if s.cfg is not None]
    if opts.data_passes and passes:
        first = passes[0]
        if len(sources) > 1:
            notes.append(f"Data passes (gradients, t-SNE, CKA) use the first run only: {first.path}.")
        figures += run_grad_sums(
            GradSumsOptions(str(first.path), batches=opts.batches, all_candidates=True, curves=False), sub["grad-sums"]
        )
        figures += run_tsne(
            TsneOptions(str(first.path), max_classes=opts.max_classes, max_images=opts.max_images), sub["tsne"]
        )
        figures += run_rep_change(RepChangeOptions(str(first.path), max_images=opts.max_images), sub["rep-change"])
    elif not opts.data_passes:
        notes.append("Data passes skipped (--no-data-passes): no gradient sums, t-SNE or CKA.")
    else:
        notes.append("Data passes need a clipfit-train run directory (it records the dataset): skipped.")
    for source in sources:
        notes += [f"{source.path}: {n}" for n in source.notes]

    runs_table = ReportTable(
        "runs",
        "Runs",
        RUN_COLUMNS,
        [_run_row(s, label) for s, label in zip(sources, labels, strict=True)],
        ["Accuracies in percent: Base / New / HM for base-to-new runs, Acc for few-shot runs."],
    )
    first_meta = sources[0].ckpt.meta
    title = (
        opts.title
        or f"clipfit report: {first_meta.get('recipe', 'clipfit')} on {first_meta.get('dataset') or 'a checkpoint'}"
    )
    intro = [
        "What the fine-tuning did, regenerated from the run directories: which tensors moved and how far "
        "(paper Fig. 3), where the training loss pushes (Fig. 4), how the image features re-cluster (Fig. 5), "
        "and how much each block's representation changed (linear CKA).",
        f"Command: clipfit-analyze {' '.join(common.argv)}",
    ]
    index, _ = write_report(out, title, intro, runs_table, tables, figures, notes)
    return index


def execute(opts: ReportOptions, common: Common) -> None:
    """Write the report, then print the path of its index.html (the last line, which make demo shows)."""
    print(run_report(opts, common))
