"""Checks on a written figure report, shared by the unit tier (figures drawn from tables made by hand) and the
integration tier (the report of trained runs)."""

from __future__ import annotations

import json
import re
import struct
from html.parser import HTMLParser
from pathlib import Path

from figures.report import CONTENT_PX

# The type scale a reader sees, in points: no figure text smaller or larger (figures.style.SIZES is 8 / 9 / 10).
SMALLEST_PT, LARGEST_PT = 7.9, 10.1
PNG_DPI = 150  # figures.style.RC["savefig.dpi"]


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.widths: dict[str, str | None] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img" and "data-figure" in attrs:
            self.widths[attrs["data-figure"]] = attrs.get("width")


def _png_width(path: Path) -> int:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">I", header[16:20])[0]


def displayed_font_sizes(report: Path) -> dict[str, list[float]]:
    """Figure key -> the size in points of every text of the figure as index.html shows it.

    From the files alone: the SVG gives the figure's width in points and each text's font size in the same
    units; index.html gives the width the PNG (the same figure, drawn at 150 dpi) is shown at in CSS px (96 to
    the inch), capped by the page's column. Shown size = font size x shown width / drawn width.
    """
    parser = _Images()
    parser.feed((report / "index.html").read_text(encoding="utf-8"))
    manifest = json.loads((report / "report.json").read_text(encoding="utf-8"))
    sizes = {}
    for figure in manifest["figures"]:
        svg = (report / figure["svg"]).read_text(encoding="utf-8")
        drawn_pt = float(re.search(r'<svg[^>]* width="([\d.]+)pt"', svg).group(1))
        png_px = _png_width(report / figure["png"])
        assert abs(png_px / PNG_DPI - drawn_pt / 72) < 0.02, f"{figure['key']}: PNG and SVG differ in size"
        width = parser.widths[figure["key"]]
        assert width is not None, f"{figure['key']}: shown without a width (stretched or shrunk to the page)"
        shown_px = min(int(width), CONTENT_PX)
        scale = shown_px / (drawn_pt / 72 * 96)
        sizes[figure["key"]] = [float(s) * scale for s in re.findall(r"font-size: ?([\d.]+)px", svg)]
    return sizes


def assert_one_type_scale(report: Path) -> None:
    """Every text of every figure of the report is shown between SMALLEST_PT and LARGEST_PT."""
    sizes = displayed_font_sizes(report)
    assert sizes, "no figures"
    wrong = {k: sorted({round(s, 1) for s in v if not SMALLEST_PT <= s <= LARGEST_PT}) for k, v in sizes.items()}
    wrong = {k: v for k, v in wrong.items() if v}
    assert not wrong, f"text shown outside {SMALLEST_PT}-{LARGEST_PT} pt: {wrong}"
    assert all(sizes.values()), f"figures without any text: {[k for k, v in sizes.items() if not v]}"
