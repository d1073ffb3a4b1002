"""One look for every figure, and one way to save them (PNG + SVG, reproducible bytes).

Figures are built with the object-oriented API (:class:`matplotlib.figure.Figure`, no pyplot), so
drawing never touches a GUI backend or global figure state; rc settings apply only inside
:func:`styled`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
from matplotlib.figure import Figure

from analysis.schemas import ALL as SCHEMAS

RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "svg.hashsalt": "clipfit",  # stable element ids: the same data gives the same SVG
    "svg.fonttype": "none",  # text stays text in the SVG
    "savefig.dpi": 150,
}
# Colour-blind-safe qualitative palette (seaborn "colorblind").
PALETTE = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133", "#56b4e9")


@contextlib.contextmanager
def styled() -> Iterator[None]:
    """The house rc settings, for the duration of drawing and saving."""
    with mpl.rc_context(RC):
        yield


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure of ``width`` x ``height`` inches."""
    return Figure(figsize=(width, height), layout="constrained")


def colours(n: int) -> list:
    """``n`` distinct colours: the palette, then a perceptually even wheel for more."""
    if n <= len(PALETTE):
        return list(PALETTE[:n])
    import seaborn as sns

    return sns.color_palette("husl", n)


def sequential(n: int, name: str = "viridis") -> list:
    """``n`` colours along a sequential colormap (early layers dark, late layers light)."""
    cmap = mpl.colormaps[name]
    return [cmap(0.9 * i / max(1, n - 1)) for i in range(n)]


@dataclass(frozen=True)
class SavedFigure:
    png: Path
    svg: Path


def save_figure(fig: Figure, out: Path, stem: str) -> SavedFigure:
    """Write ``<out>/<stem>.png`` and ``.svg`` (no timestamps in either file)."""
    out.mkdir(parents=True, exist_ok=True)
    png, svg = out / f"{stem}.png", out / f"{stem}.svg"
    with styled():
        fig.savefig(png, metadata={"Software": None})
        fig.savefig(svg, metadata={"Date": None, "Creator": None})
    return SavedFigure(png, svg)


def short_positions(positions: Sequence[str]) -> tuple[list[str], str]:
    """Axis labels for one group: "0.mlp.c_proj", "1.mlp.c_proj" -> ["0", "1"] and "block (mlp.c_proj)"
    when every position is the same module in different blocks; otherwise unchanged and ""."""
    parts = [p.split(".", 1) for p in positions]
    if parts and all(len(p) == 2 and p[0].isdigit() for p in parts) and len({p[1] for p in parts}) == 1:
        return [p[0] for p in parts], f"block ({parts[0][1]})"
    return list(positions), ""


def require(table, kind: str) -> None:
    """Refuse a table that lacks the columns of schema ``kind`` (a key of ``analysis.schemas.ALL``)."""
    missing = [c for c in SCHEMAS[kind] if c not in table.columns]
    if missing:
        raise ValueError(f"a {kind} table needs the columns {list(SCHEMAS[kind])}; missing {missing}")
    if table.empty:
        raise ValueError(f"the {kind} table is empty: nothing to draw")
