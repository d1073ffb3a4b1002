"""Base-to-new metrics and their means over seeds (PAPER.md section 7), in percent.

Base = accuracy on base test images among base classes; New = accuracy of the same model on new
test images among new classes; HM = 2BN / (B + N). Over seeds (and over datasets, for the
paper's Average row) the HM is taken of the mean Base and the mean New, not averaged itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def harmonic_mean(base: float, new: float) -> float:
    """2BN / (B + N); NaN if either is NaN, 0 when both are 0."""
    if math.isnan(base) or math.isnan(new):
        return math.nan
    return 2 * base * new / (base + new) if base + new > 0 else 0.0


def summarise(accuracies: Mapping[str, float]) -> dict[str, float]:
    """Accuracies per label space -> metrics: ``{"base", "new"}`` -> ``{"base_acc", "new_acc", "hm"}``;
    ``{"all"}`` -> ``{"acc"}`` (rounded to 4 decimals, as results.json records them)."""
    if "all" in accuracies:
        return {"acc": round(accuracies["all"], 4)}
    base, new = accuracies["base"], accuracies["new"]
    return {"base_acc": round(base, 4), "new_acc": round(new, 4), "hm": round(harmonic_mean(base, new), 4)}


def mean_over_seeds(runs: Sequence[Mapping[str, float | None]]) -> dict[str, float | None]:
    """The mean of each metric over runs (None where a run has none); the HM of the mean Base and mean New."""
    keys = runs[0].keys()
    values = {k: [r[k] for r in runs] for k in keys}
    mean = {k: None if None in v else sum(v) / len(v) for k, v in values.items()}
    if mean.get("base_acc") is not None and mean.get("new_acc") is not None:
        mean["hm"] = harmonic_mean(mean["base_acc"], mean["new_acc"])
    return mean
