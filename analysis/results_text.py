"""The results tables as text: formatted cells, GitHub Markdown and booktabs LaTeX.

A BASE2NEW, FEWSHOT or EVAL table (see :mod:`analysis.results`) becomes rows of strings, one
column definition per table kind: "mean ± std" over seeds (the std omitted when it is 0 or NaN,
i.e. one seed or an average row), "-" for a missing number, a † on methods whose numbers are not
comparable with published ones (capped test sets, random splits), and a Model column only when
the measured rows span several (model, pretrained) pairs. The same cells feed the Markdown and
LaTeX files, the printed tables and the report, so the four never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from analysis.markdown import markdown_table
from analysis.published import PUBLISHED_DATASET, PUBLISHED_SOURCE

Cell = Callable[[pd.Series], str]


def _num(value: float, std: float | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if std is None or (isinstance(std, float) and (math.isnan(std) or std == 0)):
        return f"{value:.2f}"
    return f"{value:.2f} ± {std:.2f}"


def _method(row: pd.Series) -> str:
    mark = "" if row.get("comparable", True) else " †"
    return f"{row['method']}{mark}"


def _needs_model_column(table: pd.DataFrame) -> bool:
    if "source" not in table.columns:  # self_check names the model in every row; paper compares averages
        return False
    own = table[table["source"] == ""]
    return len(own.drop_duplicates(["model", "pretrained"])) > 1


def _columns(kind: str, table: pd.DataFrame) -> list[tuple[str, Cell]]:
    model = [("Model", lambda r: f"{r['model']} ({r['pretrained']})")] if _needs_model_column(table) else []
    if kind == "base2new":
        return [
            ("Dataset", lambda r: r["dataset"]),
            ("Method", _method),
            *model,
            ("Base", lambda r: _num(r["base_mean"], r["base_std"])),
            ("New", lambda r: _num(r["new_mean"], r["new_std"])),
            ("HM", lambda r: _num(r["hm"], r["hm_std"])),
            ("Seeds", lambda r: str(r["seeds"])),
        ]
    if kind == "fewshot":
        return [
            ("Dataset", lambda r: r["dataset"]),
            ("Method", _method),
            *model,
            ("Shots", lambda r: str(r["shots"])),
            ("Acc", lambda r: _num(r["acc_mean"], r["acc_std"])),
            ("Seeds", lambda r: str(r["seeds"])),
        ]
    if kind == "self_check":
        return [
            ("Dataset", lambda r: r["dataset"]),
            ("Setting", lambda r: r["setting"]),
            ("Model", lambda r: f"{r['model']} ({r['pretrained']})"),
            ("Metric", lambda r: r["metric"]),
            ("Published", lambda r: _num(r["published"])),
            ("Measured", lambda r: _num(r["measured"])),
            ("Difference", lambda r: f"{r['difference']:+.2f}"),
            ("Check", lambda r: "ok" if r["within_tolerance"] else "OFF"),
        ]
    if kind == "paper":
        return [
            ("Method", lambda r: r["method"]),
            ("Published as", lambda r: r["published_method"]),
            ("Datasets", lambda r: str(r["datasets"])),
            ("Base", lambda r: _num(r["base"])),
            ("New", lambda r: _num(r["new"])),
            ("HM", lambda r: _num(r["hm"])),
            ("Paper Base", lambda r: _num(r["published_base"])),
            ("Paper New", lambda r: _num(r["published_new"])),
            ("Paper HM", lambda r: _num(r["published_hm"])),
            ("HM difference", lambda r: f"{r['hm_difference']:+.2f}"),
        ]
    return [
        ("Kind", lambda r: r["kind"]),
        ("Trained on", lambda r: str(r["source_dataset"])),
        ("Target", lambda r: r["dataset"]),
        ("Method", _method),
        *model,
        ("Acc", lambda r: _num(r["acc_mean"], r["acc_std"])),
        ("Zero-shot", lambda r: _num(r["zero_shot_mean"])),
        ("Seeds", lambda r: str(r["seeds"])),
    ]


def cells(kind: str, table: pd.DataFrame) -> tuple[list[str], list[list[str]], list[str]]:
    """(headers, rows of formatted cells, footnotes) of a "base2new", "fewshot", "eval", "self_check" or "paper"
    table."""
    columns = _columns(kind, table)
    rows = [[cell(row) for _, cell in columns] for _, row in table.iterrows()]
    return [h for h, _ in columns], rows, _footnotes(table)


def _footnotes(table: pd.DataFrame) -> list[str]:
    notes = []
    if "within_tolerance" in table.columns:
        return [
            "Zero-shot under the published protocol (CoOp's ZeroshotCLIP templates), mean over the runs; more "
            "than 1 point off means the network, template, preprocessing, split or weights differ from the "
            "published setting."
        ]
    if "published_hm" in table.columns:
        return [
            "Measured averages are over the datasets present (the paper's over its 11); HM of the mean Base "
            "and mean New."
        ]
    if (~table["comparable"].astype(bool)).any():
        notes.append("† not comparable with published numbers (capped test set or a random split).")
    if (table["source"] != "").any():
        notes.append(f"Rows '{PUBLISHED_DATASET}': {PUBLISHED_SOURCE}.")
    return notes


def to_markdown(kind: str, table: pd.DataFrame) -> str:
    """A GitHub Markdown table of a BASE2NEW ("base2new"), FEWSHOT ("fewshot") or EVAL ("eval") table."""
    headers, rows, notes = cells(kind, table)
    return "\n".join([markdown_table(headers, rows), *(["", *notes] if notes else [])]) + "\n"


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"), ("_", r"\_")):
        text = text.replace(char, escaped)
    return text.replace("±", r"$\pm$").replace("λ", r"$\lambda$").replace("†", r"$^\dagger$")


def to_latex(kind: str, table: pd.DataFrame) -> str:
    """A booktabs LaTeX tabular of the same cells as :func:`to_markdown`."""
    headers, rows, notes = cells(kind, table)
    spec = "l" * 2 + "r" * (len(headers) - 2)
    lines = [
        f"\\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(map(_latex_escape, headers)) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(_latex_escape(cell) for cell in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {note}" for note in notes]
    return "\n".join(lines) + "\n"
