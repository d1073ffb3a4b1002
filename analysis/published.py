"""The published numbers of the paper's tables (PAPER.md section 8), as data.

``clipfit-analyze results --published`` appends them to the base-to-new and few-shot tables for
comparison. They are averages over the paper's 11 datasets with ViT-B/16 (openai weights), recorded
as 3 seeds (the protocol of these papers); PAPER.md gives CLIPFit's base-to-new average only as an
HM, so its Base and New are NaN. The rows carry the columns of :data:`analysis.schemas.BASE2NEW` /
``FEWSHOT`` and a non-empty ``source``, which keeps them apart from measured rows in sorting,
figures and footnotes.
"""

from __future__ import annotations

import math

PUBLISHED_DATASET = "Average (11 datasets, paper)"
PUBLISHED_SOURCE = "published, ViT-B/16 (the ClipFit paper)"
# Per-dataset published zero-shot numbers come from each run's self-check (clipfit.reference).
PUBLISHED_ZERO_SHOT = "zero-shot CLIP (published)"
PUBLISHED_ZERO_SHOT_SOURCE = "published zero-shot of the run's model (clipfit.reference; PAPER.md section 8)"
# PAPER.md section 8: base-to-new averages over 11 datasets, ViT-B/16 (method, Base, New, HM).
PUBLISHED_BASE2NEW: tuple[tuple[str, float, float, float], ...] = (
    ("zero-shot CLIP", 69.34, 74.22, 71.70),
    ("CoOp", 82.69, 63.22, 71.66),
    ("CoCoOp", 80.47, 71.69, 75.83),
    ("ProGrad", 82.48, 70.75, 76.16),
    ("KgCoOp", 80.73, 73.60, 77.00),
    ("MaPLe", 82.28, 75.14, 78.55),
    ("PromptSRC", 84.26, 76.10, 79.97),
    ("CLIPFit (paper)", math.nan, math.nan, 78.97),
)
# PAPER.md section 8: 16-shot few-shot averages over 11 datasets.
PUBLISHED_FEWSHOT16: tuple[tuple[str, float], ...] = (
    ("CoOp", 79.89),
    ("CoCoOp", 74.90),
    ("MaPLe", 81.79),
    ("PromptSRC", 82.87),
    ("linear probe", 78.79),
    ("CLIP-LoRA", 83.0),
)


def published_base2new_rows() -> list[dict]:
    """BASE2NEW rows of :data:`PUBLISHED_BASE2NEW` (dataset :data:`PUBLISHED_DATASET`)."""
    return [
        {
            "method": method,
            "model": "ViT-B-16",
            "pretrained": "openai",
            "dataset": PUBLISHED_DATASET,
            "seeds": 3,
            "base_mean": base,
            "base_std": math.nan,
            "new_mean": new,
            "new_std": math.nan,
            "hm": hm,
            "hm_std": math.nan,
            "comparable": True,
            "source": PUBLISHED_SOURCE,
        }
        for method, base, new, hm in PUBLISHED_BASE2NEW
    ]


def published_fewshot_rows() -> list[dict]:
    """FEWSHOT rows of :data:`PUBLISHED_FEWSHOT16` (16 shots, dataset :data:`PUBLISHED_DATASET`)."""
    return [
        {
            "method": method,
            "model": "ViT-B-16",
            "pretrained": "openai",
            "dataset": PUBLISHED_DATASET,
            "shots": 16,
            "seeds": 3,
            "acc_mean": acc,
            "acc_std": math.nan,
            "comparable": True,
            "source": PUBLISHED_SOURCE,
        }
        for method, acc in PUBLISHED_FEWSHOT16
    ]
