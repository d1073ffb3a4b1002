"""Where the training loss pushes, as summed squared gradients per tensor: during training (paper Fig. 4
left), per step, and the screening at fixed values.

Reads the GRAD_TRAINING, GRAD_STEPS and GRAD_SUMS tables of :mod:`analysis.schemas`.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from figures.paper import PAPER_FINDING, against_paper, against_paper_sentence
from figures.positions import draw_position_bars
from figures.steps import draw_step_curves
from figures.style import PAGE_WIDTH, PALETTE, log_axis, new_figure, require, styled

IN_RECIPE, OTHER = PALETTE[0], PALETTE[7]


def group_totals(table: pd.DataFrame) -> pd.DataFrame:
    """Per layer group: summed grad_sq_sum, values, and whether the recipe trains the group."""
    totals = table.groupby("group", sort=False).agg(
        grad_sq_sum=("grad_sq_sum", "sum"), numel=("numel", "sum"), in_recipe=("in_recipe", "any")
    )
    return totals.sort_values("grad_sq_sum", ascending=False).reset_index()


def draw_grad_sums(table: pd.DataFrame, top: int = 25) -> Figure:
    """Left: layer groups ranked by their summed squared gradients; right: the ``top`` tensors."""
    require(table, "grad_sums")
    totals = group_totals(table)
    ranked = table.sort_values("rank").head(top)
    with styled():
        fig = new_figure(PAGE_WIDTH, max(3.2, 0.22 * len(ranked) + 1.2))
        left, right = fig.subplots(1, 2, width_ratios=[1, 1.4])
        left.barh(
            range(len(totals)),
            totals["grad_sq_sum"],
            color=[IN_RECIPE if r else OTHER for r in totals["in_recipe"]],
        )
        left.set_yticks(range(len(totals)), totals["group"])
        left.invert_yaxis()
        log_axis(left, "x")
        left.set_xlabel("Σ squared gradient (all tensors of the group)")
        left.set_title("layer groups")
        labels = [f"{g}: {p}" for g, p in zip(ranked["group"], ranked["position"], strict=True)]
        right.barh(
            range(len(ranked)), ranked["grad_sq_sum"], color=[IN_RECIPE if r else OTHER for r in ranked["in_recipe"]]
        )
        right.set_yticks(range(len(ranked)), labels)
        right.invert_yaxis()
        log_axis(right, "x")
        right.set_xlabel("Σ squared gradient")
        right.set_title(f"top {len(ranked)} of {len(table)} tensors")
        right.legend(
            handles=[
                Patch(color=IN_RECIPE, label="trained by the recipe"),
                Patch(color=OTHER, label="other candidate"),
            ],
            loc="lower right",
        )
        batches = int(table["batches"].iloc[0])
        fig.suptitle(f"Squared gradients of the training loss summed over {batches} batches")
    return fig


def caption_grad_sums(table: pd.DataFrame) -> str:
    """One sentence: the top tensor and group, and the recipe's share of the top 10 and the total."""
    best = table.sort_values("rank").iloc[0]
    totals = group_totals(table)
    sentence = (
        f"Summed squared gradients of the training loss over {int(best['batches'])} batches for {len(table)} "
        f"candidate tensors: the largest is {best['group']} {best['position']} ({best['grad_sq_sum']:.3g}), "
        f"the largest group {totals.iloc[0]['group']}"
    )
    if (~table["in_recipe"]).any():
        top10 = table.sort_values("rank").head(10)
        share = table.loc[table["in_recipe"], "grad_sq_sum"].sum() / table["grad_sq_sum"].sum()
        values = table.loc[table["in_recipe"], "numel"].sum() / table["numel"].sum()
        sentence += (
            f"; the recipe's tensors are {int(top10['in_recipe'].sum())} of the top 10 and carry {share:.0%} of the "
            f"total with {values:.0%} of the values"
        )
    return sentence + "."


def draw_grad_training(table: pd.DataFrame) -> Figure:
    """Paper Fig. 4 left: each trained tensor's squared gradients summed over training, by position."""
    require(table, "grad_sums_training")
    steps = ", ".join(f"{int(s)}" for s in dict.fromkeys(table["steps"]))
    title = f"Squared gradients summed over training ({steps} steps)"
    return draw_position_bars(table, "grad_sq_sum", "Σ squared gradient", title, log=True)


def caption_grad_training(table: pd.DataFrame) -> str:
    """One sentence: per group, the position whose gradients added up most, and its share of the group."""
    checkpoints = list(dict.fromkeys(table["checkpoint"]))
    first = table[table["checkpoint"] == checkpoints[0]]
    parts = []
    for group in dict.fromkeys(first.sort_values("order")["group"]):
        values = first.loc[first["group"] == group, "grad_sq_sum"]
        top = first.loc[values.idxmax()]
        share = top["grad_sq_sum"] / values.sum() if values.sum() > 0 else float("nan")
        parts.append(f"{group} most at {top['position']} ({top['grad_sq_sum']:.3g}, {share:.0%} of the group)")
    run = f" ({checkpoints[0]})" if len(checkpoints) > 1 else ""
    against = against_paper_sentence(first, "grad_sq_sum", "gradient")
    return (
        f"Squared gradients of each trained tensor summed over all {int(first['steps'].iloc[0])} training steps"
        f"{run}, as the released instrumentation summed them: "
        + "; ".join(parts)
        + "."
        + (f" {against}" if against else "")
    )


def draw_grad_steps(steps: pd.DataFrame) -> Figure:
    """Squared gradient of each trained tensor at every logged step (log scale)."""
    require(steps, "grad_sums_steps")
    return draw_step_curves(
        steps, "grad_sq", "squared gradient", "Squared gradients during training", log=True, smooth=True
    )


def caption_grad_steps(steps: pd.DataFrame) -> str:
    """One sentence: which tensor accumulated the most gradient and how the first and last steps compare."""
    checkpoint = steps["checkpoint"].iloc[0]
    own = steps[steps["checkpoint"] == checkpoint]
    last = own[own["step"] == own["step"].max()]
    top = last.loc[last["grad_sq_cum"].idxmax()]
    first_total = own[own["step"] == own["step"].min()]["grad_sq"].sum()
    last_total = last["grad_sq"].sum()
    return (
        f"Squared gradient of each trained tensor per logged step; {top['group']} {top['position']} accumulated "
        f"the most ({top['grad_sq_cum']:.3g}), and the summed squared gradient went from {first_total:.3g} at the "
        f"first record to {last_total:.3g} at the last."
    )


def draw_grad_training_configs(table: pd.DataFrame) -> Figure:
    """Paper Fig. 4 left over seeds: each configuration's mean summed squared gradient per position, the std as
    error bars (log scale)."""
    require(table, "grad_sums_training_configs")
    frame = table.copy()
    first = frame.drop_duplicates("configuration")
    names = {c: f"{c} ({r} seeds)" if r > 1 else c for c, r in zip(first["configuration"], first["runs"], strict=True)}
    frame["series"] = frame["configuration"].map(names)
    title = "Squared gradients summed over training, mean over seeds (error bars: std)"
    return draw_position_bars(
        frame, "grad_sq_sum_mean", "Σ squared gradient", title, log=True, series="series", error="grad_sq_sum_std"
    )


def caption_grad_training_configs(table: pd.DataFrame) -> str:
    """Per configuration: the tensor whose squared gradients added up most (mean ± std over seeds), and where they
    collect against the paper's finding (:mod:`figures.paper`)."""
    parts, against = [], []
    for config, own in table.groupby("configuration", sort=False):
        top = own.loc[own["grad_sq_sum_mean"].idxmax()]
        runs = int(own["runs"].iloc[0])
        spread = f" ± {top['grad_sq_sum_std']:.3g}" if runs > 1 else ""
        parts.append(
            f"{config} ({runs} {'seeds' if runs > 1 else 'run'}, {int(top['steps'])} steps): most at {top['group']} "
            f"{top['position']} ({top['grad_sq_sum_mean']:.3g}{spread})"
        )
        clauses = against_paper(own, "grad_sq_sum_mean", "gradient")
        against += [f"{config}: {clauses}"] if clauses else []
    sentence = (
        "Squared gradients of each trained tensor summed over all training steps, mean over the seeds of each "
        "configuration: " + "; ".join(parts) + "."
    )
    return sentence + (
        f" Against the paper's finding that {PAPER_FINDING}: " + "; ".join(against) + "." if against else ""
    )
