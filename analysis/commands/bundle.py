"""One figure bundle: the tables, the figure as PNG and SVG, the JSON sidecar, and the report entry.

Every figure clipfit-analyze makes is written the same way (STYLE.md 9: every figure has its data
beside it and carries a signature)::

    <out>/<stem>.csv       the tidy table the figure draws (more tables: one CSV each, by their own stem)
    <out>/<stem>.png/.svg  the figure (figures.style.save_figure: no timestamps, stable SVG ids)
    <out>/<stem>.json      the sidecar: signatures, command line, versions, files, summary

and comes back as a :class:`figures.report.ReportFigure` whose data links are the CSVs, the input
files it was drawn from, and the sidecar, in that order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.outputs import OutputDir
from figures.report import ReportFigure
from figures.style import save_figure

logger = logging.getLogger(__name__)


def write_figure(
    out: OutputDir,
    stem: str,
    tables: pd.DataFrame | Mapping[str, pd.DataFrame],
    figure: Figure | Callable[[], Figure],
    title: str,
    caption: str,
    signatures: Sequence[str],
    summary: dict | None = None,
    *,
    inputs: Sequence[Path] = (),
    extra: Sequence[Path] = (),
    finding: str = "",
) -> ReportFigure:
    """Write the bundle ``<stem>.csv/.png/.svg/.json`` into ``out`` and return its report entry.

    Args:
        out: the output folder of the analysis (its name goes into the sidecar).
        stem: file stem, also the figure's key in the report (e.g. "param_change").
        tables: the figure's data; one frame is written as ``<stem>.csv``, a mapping as
            ``<key>.csv`` per entry, in order (e.g. {"tsne": points, "tsne_metrics": metrics}).
        figure: the drawn figure, or a function that draws it (called after the CSVs are on disk,
            so the numbers survive a failed drawing).
        title: the figure's title in the report and on the console.
        caption: the sentence that says what the figure shows.
        signatures: what was analysed (one per checkpoint or run; duplicates are dropped).
        summary: the sidecar's ``summary`` (the headline numbers); empty when None.
        inputs: files written elsewhere that the figure is drawn from (e.g. ``results_runs.csv``):
            listed in the sidecar and among the report's data links.
        extra: further files of this bundle written by the caller (e.g. the table's ``.md`` and
            ``.tex``): listed in the sidecar only.
        finding: the figure's headline with its number, for the report's summary (also in the sidecar).
    """
    frames = {stem: tables} if isinstance(tables, pd.DataFrame) else dict(tables)
    csvs = [out.table(frame, name) for name, frame in frames.items()]
    saved = save_figure(figure if isinstance(figure, Figure) else figure(), out.path, stem)
    summary = {**(summary or {}), **({"finding": finding} if finding else {})}
    side = out.sidecar(stem, signatures, [*csvs, *extra, saved.png, saved.svg, *inputs], summary)
    return ReportFigure(stem, title, caption, saved.png, saved.svg, [*csvs, *inputs, side], finding, saved.width)


def announce(figures: Sequence[ReportFigure]) -> None:
    """Print where each figure and its data went."""
    for fig in figures:
        print(f"{fig.title}: {fig.png} (+ {', '.join(p.name for p in [fig.svg, *fig.data])})")


def note_left_out(message: str, notes: list[str] | None) -> None:
    """A section that leaves some runs out says so: in the log, and in the report's notes when it is part of one."""
    logger.warning("%s", message)
    if notes is not None:
        notes.append(message)
