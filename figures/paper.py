"""The figures' takeaway against the paper: one sentence each, computed from the numbers, never a fixed verdict.

The paper's statement about what fine-tuning changes (its analysis finding, ../shared/PAPER.md, from the
abstract; its Fig. 3 shows it) is :data:`PAPER_FINDING`: "low-level text bias layers and the first
layer-normalization layer change much more than other layers". Two parts of it are checked on a table of one
number per trained tensor (PARAM_CHANGE, GRAD_TRAINING and their configuration tables):

- the first image LayerNorm: summing weight and bias per LayerNorm (``ln_pre``, ``0.ln_1``, ... ``ln_post``),
  does the first in forward order have the largest sum? (against the runner-up: their ratio)
- the low-level text biases: summing the text tower's bias tensors per block, do the lower half of the blocks
  (0 .. ceil(n/2) - 1) hold more than half of the total? (and which block holds the most)

The paper's Fig. 4 left (summed squared gradients) states no finding of its own (PAPER.md section 9), so the
gradients are held against the same finding: do they collect where the paper finds the change? Its Fig. 5
(t-SNE) sets ClipFit's image features beside zero-shot CLIP's, and PAPER.md records no number or verdict of it;
:func:`against_fig5` says in which direction fine-tuning moved the two cluster numbers of the feature space.
"""

from __future__ import annotations

import math

import pandas as pd

PAPER_FINDING = "low-level text bias layers and the first layer-normalization layer change much more than other layers"
_AGREE = {"change": ("as in the paper", "unlike the paper"), "gradient": ("in line with it", "not in line with it")}


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def first_layernorm(table: pd.DataFrame, value: str) -> dict | None:
    """The image LayerNorms' summed ``value`` (weight + bias) per LayerNorm in forward order: the first one, the one
    with the largest sum and the runner-up. None when the table has no image LayerNorm."""
    norms = table[(table["tower"] == "image") & table["group"].str.contains(" LN ", regex=False)]
    if norms.empty:
        return None
    sums = norms.groupby("position", sort=False).agg(total=(value, "sum"), order=("order", "min")).sort_values("order")
    ranked = sums.sort_values("total", ascending=False, kind="stable")
    first = sums.index[0]
    top = ranked.index[0]
    second = ranked.index[1] if len(ranked) > 1 else None
    return {
        "first": first,
        "first_value": float(sums.loc[first, "total"]),
        "top": top,
        "top_value": float(ranked.loc[top, "total"]),
        "second": second,
        "second_value": float(ranked.loc[second, "total"]) if second is not None else math.nan,
    }


def low_level_text_biases(table: pd.DataFrame, value: str) -> dict | None:
    """The text tower's bias tensors in blocks, summed per block: the share of the lower half of the blocks and the
    block with the most. None when the table has no text bias in a block."""
    biases = table[(table["tower"] == "text") & (table["kind"] == "bias") & table["block"].notna()]
    if biases.empty:
        return None
    per_block = biases.groupby(biases["block"].astype(int))[value].sum().sort_index()
    blocks = len(per_block)
    lower = per_block.index[: math.ceil(blocks / 2)]
    total = per_block.sum()
    return {
        "blocks": blocks,
        "lower": (int(lower[0]), int(lower[-1])),
        "upper": (int(per_block.index[len(lower)]), int(per_block.index[-1])) if blocks > len(lower) else None,
        "lower_share": float(per_block[lower].sum() / total) if total > 0 else math.nan,
        "top": int(per_block.idxmax()),
    }


def _span(span: tuple[int, int]) -> str:
    return f"block {span[0]}" if span[0] == span[1] else f"blocks {span[0]}-{span[1]}"


def against_paper(table: pd.DataFrame, value: str, what: str = "change") -> str:
    """The two checks of the module docstring on one run's (or one configuration's) rows, as one clause each.

    Args:
        value: the column compared (``sq_change``, ``grad_sq_sum``, ``sq_change_mean``, ...).
        what: ``change`` (a parameter change: "as in the paper" / "unlike the paper") or ``gradient``
            (squared gradients, held against the paper's change: "in line with it" / "not in line with it").
    Returns:
        "" when the table has neither an image LayerNorm nor a text bias in a block.
    """
    agree, disagree = _AGREE[what]
    noun = "change" if what == "change" else "squared gradient"
    parts = []
    norm = first_layernorm(table, value)
    if norm is not None and norm["second"] is not None:
        if norm["top"] == norm["first"]:
            ratio = norm["top_value"] / norm["second_value"] if norm["second_value"] > 0 else math.inf
            parts.append(
                f"{agree}, the first image LayerNorm ({norm['first']}) has the most {noun} "
                f"({_fmt(norm['top_value'])}, {ratio:.1f}× the next, {norm['second']})"
            )
        else:
            parts.append(
                f"{disagree}, the image LayerNorm with the most {noun} is {norm['top']} "
                f"({_fmt(norm['top_value'])}), not the first ({norm['first']}, {_fmt(norm['first_value'])})"
            )
    text = low_level_text_biases(table, value)
    if text is not None and text["upper"] is not None and text["lower_share"] == text["lower_share"]:
        share = text["lower_share"]
        if share > 0.5:
            parts.append(
                f"{agree}, the low-level text biases ({_span(text['lower'])} of {text['blocks']}) hold "
                f"{share:.0%} of the text biases' {noun}, most at block {text['top']}"
            )
        else:
            parts.append(
                f"{disagree}, the high-level text biases ({_span(text['upper'])} of {text['blocks']}) hold "
                f"{1 - share:.0%} of the text biases' {noun} (the low-level ones {share:.0%}), most at block "
                f"{text['top']}"
            )
    return "; ".join(parts)


def against_paper_sentence(table: pd.DataFrame, value: str, what: str = "change") -> str:
    """:func:`against_paper` as a sentence that names the paper's finding ("" when nothing can be checked)."""
    clauses = against_paper(table, value, what)
    return f"Against the paper's finding that {PAPER_FINDING}: {clauses}." if clauses else ""


def against_fig5(zero_shot: pd.Series, tuned: dict[str, pd.Series]) -> str:
    """The t-SNE's takeaway (paper Fig. 5: ClipFit's image features beside zero-shot CLIP's): whether each fine-tuned
    model (name -> its TSNE_METRICS row, or the mean over its seeds) raised the k-NN accuracy and the silhouette of
    the same images above zero-shot's."""
    clauses = []
    for name, row in tuned.items():
        k = int(row["k"])
        # each measure's direction at the precision the sentence prints it (0: unchanged as printed)
        knn = _direction(zero_shot["knn_acc"], row["knn_acc"], 1)
        sil = _direction(zero_shot["silhouette"], row["silhouette"], 3)
        clauses.append(
            f"{name} moves the {k}-NN accuracy {zero_shot['knn_acc']:.1f}% → {row['knn_acc']:.1f}% and "
            f"the silhouette {zero_shot['silhouette']:.3f} → {row['silhouette']:.3f}: {_fig5_verdict(knn, sil, k)}"
        )
    return "Paper Fig. 5 sets ClipFit's image features beside zero-shot CLIP's; here " + "; ".join(clauses) + "."


def _direction(before: float, after: float, digits: int) -> int:
    """1 up, -1 down, 0 unchanged, comparing ``before`` and ``after`` as printed with ``digits`` decimals."""
    a, b = round(float(before), digits), round(float(after), digits)
    return (b > a) - (b < a)


def _fig5_verdict(knn: int, sil: int, k: int) -> str:
    """How the classes separate after fine-tuning, from the directions of the k-NN accuracy and the silhouette."""
    if knn == sil:
        return {1: "the classes separate better by both", -1: "the classes separate worse by both"}.get(
            knn, "the classes separate as before by both (unchanged at this precision)"
        )
    if knn == -sil:
        return "the classes separate better by one measure and worse by the other"
    moved, way = (f"the {k}-NN accuracy", knn) if knn else ("the silhouette", sil)
    still = "the silhouette" if knn else f"the {k}-NN accuracy"
    return f"the classes separate {'better' if way > 0 else 'worse'} by {moved}, {still} unchanged"
