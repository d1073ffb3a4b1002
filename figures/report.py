"""The figure report: one self-contained ``index.html`` and a ``report.md`` beside it.

``index.html`` embeds every figure as a PNG data URI and carries its own CSS, so it works offline
and opened straight from disk; links to each figure's SVG and CSV are relative to the report
folder. ``report.md`` shows the same content with relative image links. ``report.json`` lists the
figures and tables (what a test or a script can check against).

Both open with a header (when the report was made, with which software, on which machine, how long the runs
trained), a summary (the main findings, each with its number, from the figures' ``finding``) and a table of
contents; a table wider than the page scrolls inside its own box.

Every figure is shown at its natural size (``width`` = its width in inches x 96 CSS px, never stretched;
``max-width: 100%`` only on a narrower window), so the type scale of :mod:`figures.style` holds on the page:
an 8-pt label reads as 8 pt in every figure.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from analysis.markdown import markdown_table
from figures.style import CSS_PX_PER_INCH

INDEX = "index.html"
MARKDOWN = "report.md"
MANIFEST = "report.json"
CONTENT_PX = 1150  # the page's column (CSS px); figures.style.PAGE_WIDTH inches fit in it

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: {content}px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
.scroll { overflow-x: auto; max-width: 100%; } .scroll table { margin: 0; }
td { max-width: 28em; overflow-wrap: anywhere; }
nav.toc ol { columns: 2; font-size: 0.9em; } .summary li { margin: 0.3em 0; }
dl.header { display: grid; grid-template-columns: max-content auto; gap: 0.15em 1em; font-size: 0.9em; color: #444; }
dl.header dt { font-weight: 600; } dl.header dd { margin: 0; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { margin-top: 0.4em; } .files, .note { color: #666; font-size: 0.85em; }
code { background: #f6f6f6; padding: 0 0.2em; word-break: break-all; }
""".replace("{content}", str(CONTENT_PX))


@dataclass
class ReportFigure:
    """A figure with its data files and the sentence that says what it shows."""

    key: str  # unique id, e.g. "param_change"
    title: str
    caption: str
    png: Path
    svg: Path
    data: list[Path] = field(default_factory=list)  # CSV (and JSON sidecar) files beside it
    finding: str = ""  # the headline with its number, listed in the report's summary
    width: float = 0.0  # inches, as drawn: the report shows it width x 96 CSS px wide (0: the PNG's own width)


@dataclass
class ReportTable:
    """A table as rendered cells (strings), with footnotes."""

    key: str
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    data: list[Path] = field(default_factory=list)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_uri()


def _is_number(cell: str) -> bool:
    head = cell.split(" ")[0]
    return head.replace(".", "", 1).replace("-", "", 1).isdigit()


def _html_table(table: ReportTable) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{html.escape(c)}</td>' if _is_number(c) else f"<td>{html.escape(c)}</td>" for c in row
        )
        + "</tr>"
        for row in table.rows
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _files_html(paths: list[Path], root: Path) -> str:
    links = [f'<a href="{html.escape(_rel(p, root))}">{html.escape(p.name)}</a>' for p in paths]
    return f'<p class="files">data: {" · ".join(links)}</p>' if links else ""


def display_width(fig: ReportFigure) -> int | None:
    """The width in CSS px at which the report shows ``fig``: its natural size (None: not known)."""
    return round(fig.width * CSS_PX_PER_INCH) if fig.width > 0 else None


def _img(fig: ReportFigure, src: str) -> str:
    width = display_width(fig)
    size = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(fig.title)}" data-figure="{html.escape(fig.key)}"{size} src="{html.escape(src)}">'


def _anchor(title: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    kept = "".join(c for c in title.strip().lower() if c.isalnum() or c in "-_ ")
    return kept.replace(" ", "-")


def write_report(
    out: Path,
    title: str,
    intro: list[str],
    runs: ReportTable,
    tables: list[ReportTable],
    figures: list[ReportFigure],
    notes: list[str] | None = None,
    summary: list[str] | None = None,
    header: list[tuple[str, str]] | None = None,
) -> tuple[Path, Path]:
    """Write ``index.html``, ``report.md`` and ``report.json`` into ``out``; returns (html, md).

    Args:
        intro: paragraphs under the title (plain text).
        runs: the run settings and signatures, one row per run.
        tables: result tables.
        figures: the figures, in order, each with its caption.
        notes: closing remarks (what was skipped and why).
        summary: the main findings, one line each with its number (default: the figures' findings).
        header: (label, value) lines under the title: date, versions, machine, training time.
    """
    out.mkdir(parents=True, exist_ok=True)
    notes = notes or []
    summary = summary if summary is not None else [f.finding for f in figures if f.finding]
    # (html id, heading) of every section, in order, for the table of contents
    sections = [("runs", runs.title)]
    sections += [(f"table-{t.key}", t.title) for t in tables] + [(f.key, f.title) for f in figures]
    sections += [("notes", "Notes")] if notes else []
    toc_html = "".join(f'<li><a href="#{html.escape(i)}">{html.escape(t)}</a></li>' for i, t in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    md = [f"# {title}", ""]
    if header:
        parts += ['<dl class="header">']
        parts += [f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in header] + ["</dl>"]
        md += [f"**{k}:** {v}  " for k, v in header] + [""]
    parts += [f"<p>{html.escape(p)}</p>" for p in intro]
    md += [p + "\n" for p in intro]
    if summary:
        parts += ['<h2 id="summary">Summary</h2>', '<ul class="summary">']
        parts += [f"<li>{html.escape(line)}</li>" for line in summary] + ["</ul>"]
        md += ["## Summary", "", *[f"- {line}" for line in summary], ""]
    parts += ['<nav class="toc"><h2 id="contents">Contents</h2>', f"<ol>{toc_html}</ol></nav>"]
    md += ["## Contents", "", *[f"1. [{t}](#{_anchor(t)})" for _, t in sections], ""]
    parts += [f'<h2 id="runs">{html.escape(runs.title)}</h2>', _html_table(runs)]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in runs.notes]
    md += [f"## {runs.title}", "", markdown_table(runs.headers, runs.rows), "", *[n + "\n" for n in runs.notes]]
    for table in tables:
        parts += [f'<h2 id="table-{html.escape(table.key)}">{html.escape(table.title)}</h2>', _html_table(table)]
        parts += [f'<p class="note">{html.escape(n)}</p>' for n in table.notes]
        parts.append(_files_html(table.data, out))
        md += [f"## {table.title}", "", markdown_table(table.headers, table.rows), "", *[n + "\n" for n in table.notes]]
    for fig in figures:
        data = base64.b64encode(fig.png.read_bytes()).decode("ascii")
        parts += [
            f'<h2 id="{html.escape(fig.key)}">{html.escape(fig.title)}</h2>',
            f'<figure id="fig-{html.escape(fig.key)}">',
            _img(fig, f"data:image/png;base64,{data}"),
            f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>",
            _files_html([fig.svg, *fig.data], out),
        ]
        md += [f"## {fig.title}", "", _img(fig, _rel(fig.png, out)), "", fig.caption, ""]  # <img>: at its size
        md += ["Data: " + ", ".join(f"[{p.name}]({_rel(p, out)})" for p in [fig.svg, *fig.data]), ""]
    if notes:
        parts += ['<h2 id="notes">Notes</h2>', "<ul>", *[f"<li>{html.escape(n)}</li>" for n in notes], "</ul>"]
        md += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    parts.append("</body></html>")
    index, markdown = out / INDEX, out / MARKDOWN
    index.write_text("\n".join(parts) + "\n", encoding="utf-8")
    markdown.write_text("\n".join(md).rstrip() + "\n", encoding="utf-8")
    manifest = {
        "title": title,
        "header": dict(header or []),
        "summary": summary,
        "figures": [
            {"key": f.key, "title": f.title, "caption": f.caption, "png": _rel(f.png, out), "svg": _rel(f.svg, out)}
            for f in figures
        ],
        "tables": [{"key": t.key, "title": t.title} for t in tables],
        "notes": notes,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return index, markdown
