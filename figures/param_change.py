"""Paper Fig. 3 (and Fig. 4 right): how far each trained tensor moved from its pretrained value.

Reads the PARAM_CHANGE and PARAM_STEPS tables of :mod:`analysis.schemas`.
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

from figures.paper import against_paper_sentence
from figures.positions import draw_position_bars
from figures.steps import draw_step_curves
from figures.style import require

MEASURES = {
    "sq_change": "squared L2 change ||θ−θ₀||²",
    "l2_change": "L2 change ||θ−θ₀||",
    "rel_change": "relative change ||θ−θ₀|| / ||θ₀||",
}

AXIS = {"sq_change": "squared L2 change", "l2_change": "L2 change", "rel_change": "relative change"}


def draw_param_change(table: pd.DataFrame, measure: str = "sq_change") -> Figure:
    """Bars of ``measure`` per position, one panel per layer group, one colour per checkpoint."""
    require(table, "param_change")
    title = f"Per-layer change from the pretrained values: {MEASURES[measure]}"
    return draw_position_bars(table, measure, AXIS[measure], title)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def caption_param_change(table: pd.DataFrame, measure: str = "sq_change") -> str:
    """Which position of each group moved most, how the checkpoints compare, and the first checkpoint against the
    paper's finding (:mod:`figures.paper`)."""
    checkpoints = list(dict.fromkeys(table["checkpoint"]))
    first = table[table["checkpoint"] == checkpoints[0]]
    parts = []
    for group in dict.fromkeys(first.sort_values("order")["group"]):
        values = first.loc[first["group"] == group, measure].dropna()
        if values.empty:  # rel_change of a group whose pretrained values are all zero (e.g. zero-initialised biases)
            parts.append(f"{group} undefined (pretrained values all zero)")
            continue
        top = first.loc[values.idxmax()]
        share = top[measure] / values.sum() if values.sum() > 0 else math.nan
        parts.append(f"{group} most at {top['position']} ({_fmt(top[measure])}, {share:.0%} of the group)")
    measure_name = MEASURES[measure]
    sentence = f"{measure_name[0].upper()}{measure_name[1:]} of every trained tensor"
    sentence += f" ({checkpoints[0]}): " if len(checkpoints) > 1 else ": "
    sentence += "; ".join(parts)
    if len(checkpoints) > 1:
        totals = table.groupby("checkpoint", sort=False)[measure].sum()
        ratios = ", ".join(f"{c} {_fmt(totals[c])}" for c in checkpoints)
        sentence += f"; summed over all tensors: {ratios}"
    against = against_paper_sentence(first, measure)
    return sentence + "." + (f" {against}" if against else "")


def draw_param_steps(steps: pd.DataFrame) -> Figure:
    """Squared change from the pretrained value of each tensor over training steps."""
    require(steps, "param_change_steps")
    return draw_step_curves(
        steps, "sq_change", "squared L2 change", "Change from the pretrained values during training"
    )


def caption_param_steps(steps: pd.DataFrame) -> str:
    """One sentence: the tensor that ends furthest away and when the change saturates."""
    checkpoint = steps["checkpoint"].iloc[0]
    own = steps[steps["checkpoint"] == checkpoint]
    last_step = own["step"].max()
    last = own[own["step"] == last_step]
    top = last.loc[last["sq_change"].idxmax()]
    half = own[own["name"] == top["name"]]
    reached = half[half["sq_change"] >= top["sq_change"] / 2]["step"].min()
    return (
        f"Squared change of each trained tensor at every logged step ({len(own['name'].unique())} tensors, "
        f"{own['step'].nunique()} records up to step {last_step}); {top['group']} {top['position']} ends furthest "
        f"from its pretrained value ({_fmt(top['sq_change'])}) and had covered half of that by step {reached}."
    )


def finding_param_change(table: pd.DataFrame, measure: str = "sq_change") -> str:
    """The headline: which tensor of the first checkpoint moved most, and its share of all the change."""
    first = table[table["checkpoint"] == table["checkpoint"].iloc[0]]
    values = first[measure].dropna()
    if values.empty or values.sum() <= 0:
        return ""
    top = first.loc[values.idxmax()]
    return (
        f"Parameter change ({top['checkpoint']}): {top['group']} {top['position']} moved most, "
        f"{top[measure] / values.sum():.0%} of the {AXIS[measure]} summed over all {len(first)} trained tensors."
    )
