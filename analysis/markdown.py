"""GitHub Markdown tables: the one renderer behind report.md and the results tables.

A table is a header row, a separator row ``|---|---|`` and one row per record; a ``|`` inside a
cell is escaped so it cannot open a column. This module imports nothing, so ``figures`` may use it
(the figure modules depend on no analysis module but this one and :mod:`analysis.schemas`).
"""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The lines of a Markdown table of formatted cells, joined by newlines (no trailing newline)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)
