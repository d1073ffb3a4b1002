"""``clipfit-analyze report``: one self-contained figure report of one or more runs, or of a sweep.

The report reuses the other sub-commands unchanged: the results tables of the runs that finished, the training
curves (loss and accuracy per step, from metrics.jsonl), param-change of all runs (paper Fig. 3; seeds of one
configuration averaged, configurations side by side per layer group, absolute and per value; Fig. 4 right
where two configurations differ only in λ), the per-step curves, the gradient consistency (grad-cos), the
channels, and the data passes: grad-sums (the screening at the pretrained values, first run), per-class, tsne
(Fig. 5) and rep-change (linear CKA) over the runs. A folder that is not a run stands for every run under it
(a sweep). Each analysis writes into its own sub-folder; ``figures.report`` assembles ``index.html``,
``report.md`` and ``report.json``, opening with a summary of the main findings and a table of contents.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.commands.channels import ChannelsOptions, run_channels
from analysis.commands.common import Common, DataOptions, data_config, recorded_results
from analysis.commands.grad_cos import GradCosOptions, run_grad_cos
from analysis.commands.grad_sums import GradSumsOptions, run_grad_steps, run_grad_sums
from analysis.commands.param_change import ParamChangeOptions, run_param_change
from analysis.commands.per_class import PerClassOptions, run_per_class
from analysis.commands.rep_change import RepChangeOptions, run_rep_change
from analysis.commands.results import results_from_runs
from analysis.commands.training_curves import TrainingCurvesOptions, run_training_curves
from analysis.commands.tsne import TsneOptions, run_tsne
from analysis.errors import AnalysisError
from analysis.outputs import machine
from analysis.results import base2new_table, fewshot_table, read_runs
from analysis.schemas import ALL_SHOTS, shots_order, shots_text
from analysis.sources import Source, configurations, default_labels, find_runs, load_source
from clipfit.provenance import versions
from clipfit.rundir import RunDir
from figures.report import ReportTable, write_report

RUN_COLUMNS = [
    "Label",
    "Configuration",
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
    "Training time",
    "Signature",
]


@dataclass
class ReportOptions:
    """Which runs the report covers and how much the data passes read."""

    run_dirs: list[str]  # run directories (or checkpoints, or sweep folders: every run under them) to report on
    title: str | None = None  # report title (default: recipe and dataset of the first run)
    pretrained: str | None = None  # MODEL:SOURCE for original CLIPFit checkpoints
    data_passes: bool = True  # grad-sums (first run), per-class, tsne and rep-change (they read images)
    max_images: int = 400  # cap for tsne and rep-change
    max_classes: int = 10  # classes in the t-SNE
    class_images: int = 800  # test images per label space in per-class (evenly spaced; 25 per class on shapes)
    batches: int = 4  # grad-sums batches
    published: bool = False  # add the published numbers of PAPER.md section 8 to the results tables


OPTIONS = ReportOptions
MAX_LISTED = 6  # runs whose training time the header lists one by one
SOFTWARE = (("clipfit", "clipfit"), ("torch", "torch"), ("open_clip", "open_clip"), ("Python", "python"))


def _run_row(source: Source, label: str, configuration: str) -> list[str]:
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
        configuration,
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
        duration(_train_seconds(source)),
        source.signature,
    ]


def _train_seconds(source: Source) -> float | None:
    """The run's training wall time (results.json, else the checkpoint), None where it was not recorded."""
    seconds = recorded_results(source).get("train_seconds", source.ckpt.meta.get("train_seconds"))
    return float(seconds) if isinstance(seconds, int | float) else None


def duration(seconds: float | None) -> str:
    """81.6 s, 12.5 min, 3.2 h; "-" when unknown."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def report_header(sources: list[Source], labels: list[str], now: float | None = None) -> list[tuple[str, str]]:
    """The lines under the report's title: when it was made, with which versions, on which machine, and how long
    each run trained (results.json's train_seconds; several runs beyond MAX_LISTED: the total and the range)."""
    soft = versions()
    times = [(label, _train_seconds(s)) for s, label in zip(sources, labels, strict=True)]
    known = [t for _, t in times if t is not None]
    if not known:
        trained = "not recorded (no results.json or checkpoint with train_seconds)"
    elif len(times) <= MAX_LISTED:
        trained = ", ".join(f"{label} {duration(t)}" for label, t in times)
    else:
        trained = (
            f"{len(known)} runs, {duration(sum(known))} in total, {duration(min(known))} to {duration(max(known))} "
            "each (per run: the runs table)"
        )
    software = ", ".join(f"{name} {soft[key]}" for name, key in SOFTWARE)
    return [
        ("Generated", time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(now))),
        ("Software", software),
        ("Report made on", machine()),
        ("Training time", trained),
    ]


def _results_finding(runs: pd.DataFrame) -> str:
    """The summary's line on accuracy: zero-shot and each method, per dataset (base-to-new HM, or few-shot Acc)."""
    lines = []
    b2n = base2new_table(runs)
    for dataset, part in b2n.groupby("dataset", sort=False):
        items = [f"{m} {hm:.2f}" + (f" ({int(n)} seeds)" if n > 1 else "") for m, hm, n in
                 zip(part["method"], part["hm"], part["seeds"], strict=True)]  # fmt: skip
        lines.append(f"{dataset} base-to-new HM: " + ", ".join(items))
    few = fewshot_table(runs)
    for dataset, part in few.groupby("dataset", sort=False):
        groups = []  # zero-shot (the 0-shot rows) first, then each shot count, worded as caption_fewshot does
        for shots, rows in part.groupby("shots", sort=False):
            items = ", ".join(f"{m} {a:.2f}" for m, a in zip(rows["method"], rows["acc_mean"], strict=True))
            if shots == ALL_SHOTS:
                groups.append(f"with every training image {items}")
            else:
                groups.append(items if shots_order(shots) == 0 else f"at {shots_text(shots)} shots {items}")
        lines.append(f"{dataset} few-shot accuracy: " + "; ".join(groups))
    return ("Results: " + "; ".join(lines) + ".") if lines else ""


def _tsne_per_dataset(passes: list[Source], opts: ReportOptions, common: Common, notes: list[str]) -> list:
    """One t-SNE per dataset the runs trained on (a t-SNE compares the same test images): the first dataset's in
    ``common.out``, each further one in a sibling folder ``tsne-<dataset>``, its figure keyed ``tsne_<dataset>``."""
    by_dataset: dict[str, list[Source]] = {}
    for source in passes:
        by_dataset.setdefault(data_config(source, DataOptions()).data.dataset, []).append(source)
    figures = []
    for i, (dataset, runs) in enumerate(by_dataset.items()):
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset).strip("_")
        out = common if i == 0 else Common(Path(common.out).parent / f"tsne-{slug}", common.argv, common.device)
        tsne = TsneOptions([str(s.path) for s in runs], max_classes=opts.max_classes, max_images=opts.max_images)
        drawn = run_tsne(tsne, out)
        figures += drawn if i == 0 else [dataclasses.replace(f, key=f"{f.key}_{slug}") for f in drawn]
    if len(by_dataset) > 1:
        notes.append(f"The runs trained on {len(by_dataset)} datasets: a t-SNE for each ({', '.join(by_dataset)}).")
    return figures


def run_report(opts: ReportOptions, common: Common) -> Path:
    """The figure report of one or more runs (or sweeps); returns the path of index.html."""
    if not opts.run_dirs:
        raise AnalysisError("report needs at least one run directory")
    sources = [load_source(p, opts.pretrained) for p in find_runs(opts.run_dirs)]
    labels, config_of = default_labels(sources), configurations(sources)
    compare = len(set(config_of)) > 1
    out = Path(common.out).expanduser()
    names = ("results", "training-curves", "param-change", "grad-sums", "grad-cos", "channels", "per-class", "tsne")
    names += ("rep-change",)
    sub = {name: Common(out / name, common.argv, common.device) for name in names}
    figures, tables, notes, summary = [], [], [], []

    finished = [
        (s, c) for s, c in zip(sources, config_of, strict=True)
        if s.run_dir is not None and RunDir(s.run_dir).state == "finished"
    ]  # fmt: skip
    if finished:
        parts = []
        for source, config in finished:
            part = read_runs(source.run_dir)
            if compare:  # a table row per configuration, its seeds averaged (clipfit-eval targets stay apart)
                part.loc[part["setting"] != "eval", "method"] = config
            parts.append(part)
        runs = pd.concat(parts, ignore_index=True).drop_duplicates()
        results = results_from_runs(runs, opts.published, sub["results"], [s.signature for s in sources])
        tables += results.tables
        figures += results.figures
        summary.append(_results_finding(runs))
    else:
        notes.append("No results.json in the given run directories (unfinished runs?): no results table.")

    paths = [str(s.path) for s in sources]
    figures += run_training_curves(TrainingCurvesOptions(paths), sub["training-curves"], sources, notes)
    figures += run_param_change(ParamChangeOptions(paths, pretrained=opts.pretrained), sub["param-change"], sources)
    figures += run_grad_steps(sources, labels, sub["grad-sums"])
    if not any(s.layers_file for s in sources):
        notes.append("No layers.jsonl (not a clipfit-train run directory): no per-step curves.")
    figures += run_grad_cos(GradCosOptions(paths), sub["grad-cos"], sources, notes)
    figures += run_channels(ChannelsOptions(paths), sub["channels"], sources, notes)

    passes = [s for s in sources if s.cfg is not None]
    if opts.data_passes and passes:
        first, runs_paths = passes[0], [str(s.path) for s in passes]
        if len(sources) > 1:
            notes.append(f"The gradient screening uses the first run only: {first.path}.")
        figures += run_grad_sums(
            GradSumsOptions(str(first.path), batches=opts.batches, all_candidates=True, curves=False), sub["grad-sums"]
        )
        per_class = PerClassOptions(runs_paths, max_images=opts.class_images)
        figures += run_per_class(per_class, sub["per-class"], passes)
        figures += _tsne_per_dataset(passes, opts, sub["tsne"], notes)
        figures += run_rep_change(RepChangeOptions(runs_paths, max_images=opts.max_images), sub["rep-change"])
    elif not opts.data_passes:
        notes.append("Data passes skipped (--no-data-passes): no gradient screening, per-class, t-SNE or CKA.")
    else:
        notes.append("Data passes need a clipfit-train run directory (it records the dataset): skipped.")
    for source in sources:
        notes += [f"{source.path}: {n}" for n in source.notes]

    runs_table = ReportTable(
        "runs",
        "Runs",
        RUN_COLUMNS,
        [_run_row(s, label, c) for s, label, c in zip(sources, labels, config_of, strict=True)],
        [
            "Accuracies in percent: Base / New / HM for base-to-new runs, Acc for few-shot runs. Runs that differ "
            "only in their seed share a configuration; the figures average them (error bars: std over seeds)."
        ],
    )
    first_meta = sources[0].ckpt.meta
    datasets = list(dict.fromkeys(s.ckpt.meta.get("dataset") or "a checkpoint" for s in sources))
    dataset = ", ".join(datasets)
    title = opts.title or (
        f"clipfit report: {len(set(config_of))} configurations ({len(sources)} runs) on {dataset}"
        if compare
        else f"clipfit report: {first_meta.get('recipe', 'clipfit')} on {dataset}"
    )
    intro = [
        "What the fine-tuning did, regenerated from the run directories: how the loss and accuracy went during "
        "training, which tensors moved and how far "
        "(paper Fig. 3; Fig. 4 right with and without the regulariser), where the training loss pushes (Fig. 4), "
        "how consistent its gradients were, which channels and classes changed, how the image features re-cluster "
        "(Fig. 5), and how much each block's representation changed (linear CKA).",
        f"Command: clipfit-analyze {' '.join(common.argv)}",
    ]
    summary += [f.finding for f in figures if f.finding]
    header = report_header(sources, labels)
    index, _ = write_report(out, title, intro, runs_table, tables, figures, notes, [s for s in summary if s], header)
    return index


def execute(opts: ReportOptions, common: Common) -> None:
    """Write the report, then print the path of its index.html (the last line, which make demo shows)."""
    print(run_report(opts, common))
