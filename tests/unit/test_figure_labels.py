"""Point labels of the Base/New scatter never overprint each other."""

from __future__ import annotations

import itertools

from matplotlib.figure import Figure

from figures.results import _label_offsets


def _axes():
    ax = Figure(figsize=(5, 4), dpi=100).subplots()
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    return ax


def test_coincident_points_get_labels_on_different_lines():
    offsets = _label_offsets(_axes(), [60.0, 60.1, 60.2], [52.0, 52.0, 51.9], ["clipfit", "clipfit-fc", "b"], 7)
    heights = sorted(dy for _, dy in offsets.values())
    assert all(b - a >= 7 * 1.25 for a, b in itertools.pairwise(heights))


def test_labels_of_distant_points_stay_beside_their_point():
    offsets = _label_offsets(_axes(), [10.0, 80.0], [10.0, 80.0], ["zero-shot", "full"], 7)
    assert offsets == {"zero-shot": (4.0, 4.0), "full": (4.0, 4.0)}
