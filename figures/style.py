"""One look for every figure, and one way to save them (PNG + SVG, reproducible bytes).

Figures are built with the object-oriented API (:class:`matplotlib.figure.Figure`, no pyplot), so
drawing never touches a GUI backend or global figure state; rc settings apply only inside
:func:`styled`.

One type scale: every figure is drawn at the size it is shown at. Its width is at most
:data:`PAGE_WIDTH` inches (:func:`new_figure` enforces it) and the report shows it at its natural size,
one figure inch to :data:`CSS_PX_PER_INCH` CSS pixels (``figures.report``), so the font sizes below are
the sizes a reader sees, in points, in every figure alike: :data:`SMALL` for tick labels, legends and
annotations, :data:`TEXT` for axis labels and panel titles, :data:`TITLE` for the figure's title.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
from matplotlib.figure import Figure
from matplotlib.ticker import Formatter

from analysis.schemas import ALL as SCHEMAS

PAGE_WIDTH = 11.0  # inches: the widest figure, as wide as the report's column (figures.report.CONTENT_PX)
CSS_PX_PER_INCH = 96  # CSS's fixed ratio: a figure W inches wide is shown W * 96 px wide, so 1 pt stays 1 pt
SMALL, TEXT, TITLE = 8.0, 9.0, 10.0  # the type scale, in points (see the module docstring)
SIZES = (SMALL, TEXT, TITLE)  # every font size a figure may use

RC = {
    "font.size": TEXT,
    "axes.titlesize": TEXT,
    "axes.labelsize": TEXT,
    "figure.titlesize": TITLE,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.alpha": 0.3,
    "legend.fontsize": SMALL,
    "legend.title_fontsize": SMALL,
    "legend.frameon": False,
    "xtick.labelsize": SMALL,
    "ytick.labelsize": SMALL,
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
    """A constrained-layout figure of ``width`` x ``height`` inches, ``width`` capped at :data:`PAGE_WIDTH`.

    A wider figure would be shrunk to the page in the report, and its text with it (a 17-inch figure's 8-pt
    labels read as 5.5 pt); capped, the layout makes room within the page instead.
    """
    return Figure(figsize=(min(width, PAGE_WIDTH), height), layout="constrained")


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


def log_axis(ax, axis: str = "y") -> None:
    """A log scale whose tick labels are plain text at the axis's size (10⁻³ with superscript characters),
    where matplotlib's default typesets the exponent in mathtext at 70% size (5.6 pt on 8-pt ticks)."""
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_formatter(LogTicks(minor=False))
    target.set_minor_formatter(LogTicks(minor=True))


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def power_of_ten(value: float) -> str:
    """A positive number as plain text: 0.01 to 100 in ``%g``, others as 10⁻³ or 2×10⁻⁴ (superscript characters)."""
    if value <= 0 or not math.isfinite(value):
        return ""
    exponent = math.floor(math.log10(value) + 1e-9)
    if -2 <= exponent <= 2:
        return f"{value:g}"
    mantissa = round(value / 10.0**exponent, 1)
    power = "10" + str(exponent).translate(_SUPERSCRIPT)
    return power if mantissa == 1 else f"{mantissa:g}×{power}"


class LogTicks(Formatter):
    """Tick labels of a log axis: every power of ten; the 2s and 5s between only while at most one power of ten
    lies within the axis's view (with two or more, the decades are labelled already)."""

    def __init__(self, minor: bool) -> None:
        self.minor = minor

    def __call__(self, value: float, pos: int | None = None) -> str:
        if self.minor:
            low, high = sorted(self.axis.get_view_interval())
            if low > 0 and math.floor(math.log10(high)) - math.ceil(math.log10(low)) >= 1:
                return ""  # two powers of ten or more are in view, and labelled
            exponent = math.floor(math.log10(value) + 1e-9) if value > 0 else 0
            if value <= 0 or round(value / 10.0**exponent, 6) not in (2.0, 5.0):
                return ""
        return power_of_ten(value)


@dataclass(frozen=True)
class SavedFigure:
    png: Path
    svg: Path
    width: float  # inches: the figure's width, at which the report shows it


def save_figure(fig: Figure, out: Path, stem: str) -> SavedFigure:
    """Write ``<out>/<stem>.png`` and ``.svg`` (no timestamps in either file)."""
    out.mkdir(parents=True, exist_ok=True)
    png, svg = out / f"{stem}.png", out / f"{stem}.svg"
    with styled():
        fig.savefig(png, metadata={"Software": None})
        fig.savefig(svg, metadata={"Date": None, "Creator": None})
    return SavedFigure(png, svg, float(fig.get_figwidth()))


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
