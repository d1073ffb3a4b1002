"""Published zero-shot numbers, and a run's self-check against them (PAPER.md section 8).

A zero-shot accuracy more than about a point off the published one, on a published split, means
the network, the template, the preprocessing, the split or the weights differ from the published
setting: every fine-tuned number of the run is then measured from another starting point than the
paper's. So when a run's (architecture, weights) have published per-dataset zero-shot numbers, the
run compares its own zero-shot accuracy, under the published protocol (CoOp's ZeroshotCLIP
templates), with them, logs the difference, records it in results.json, and warns past
:data:`TOLERANCE` points.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

TOLERANCE = 1.0  # accuracy points


@dataclass(frozen=True)
class Reference:
    """Published zero-shot numbers of one model and its weights, per dataset, in percent."""

    name: str  # what the numbers are, for messages
    models: frozenset[tuple[str, str]]  # (open_clip architecture, pretrained source) they apply to
    activation: str  # the activation of the network they were measured with
    source: str  # where the numbers were published
    base2new: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)  # dataset -> Base, New, HM
    all_classes: Mapping[str, float] = field(default_factory=dict)  # dataset -> accuracy over all classes


# PAPER.md section 8: CLIP ViT-B/16 with OpenAI's weights (QuickGELU), CoOp's ZeroshotCLIP templates;
# base-to-new from CoCoOp (CVPR 2022) Table 1, all classes from its Table 3 (domain generalisation).
VIT_B16_OPENAI = Reference(
    name="CLIP ViT-B/16, OpenAI weights",
    models=frozenset({("ViT-B-16", "openai"), ("ViT-B-16-quickgelu", "openai")}),
    activation="quickgelu",
    source="CoCoOp (CVPR 2022) Tables 1 and 3, repeated by MaPLe, PromptSRC and the ClipFit paper",
    base2new={
        "imagenet": (72.43, 68.14, 70.22),
        "caltech101": (96.84, 94.00, 95.40),
        "oxford_pets": (91.17, 97.26, 94.12),
        "stanford_cars": (63.37, 74.89, 68.65),
        "oxford_flowers": (72.08, 77.80, 74.83),
        "food101": (90.10, 91.22, 90.66),
        "fgvc_aircraft": (27.19, 36.29, 31.09),
        "sun397": (69.36, 75.35, 72.23),
        "dtd": (53.24, 59.90, 56.37),
        "eurosat": (56.48, 64.05, 60.03),
        "ucf101": (70.53, 77.50, 73.85),
    },
    all_classes={
        "imagenet": 66.73,
        "imagenetv2": 60.83,
        "imagenet_sketch": 46.15,
        "imagenet_a": 47.77,
        "imagenet_r": 73.96,
    },
)
REFERENCES: list[Reference] = [VIT_B16_OPENAI]

LIKELY_CAUSES = (
    "the activation (OpenAI's CLIP needs QuickGELU)",
    "the template (the published numbers use CoOp's ZeroshotCLIP templates)",
    "the preprocessing (bicubic resize of the short side to the input size, centre crop, CLIP's mean and std)",
    "the split (the published split file, all test images: no --max-eval-images)",
    "the weights (another file than OpenAI's)",
)


def reference_for(model: str, pretrained: str) -> Reference | None:
    """The published numbers of (architecture, pretrained source), if there are any."""
    return next((r for r in REFERENCES if (model, pretrained) in r.models), None)


def published_zero_shot(reference: Reference, dataset: str, setting: str) -> dict[str, float] | None:
    """The published zero-shot metrics of a dataset in a setting (``base2new``, ``fewshot``/``eval``: all classes)."""
    if setting == "base2new" and dataset in reference.base2new:
        base, new, hm = reference.base2new[dataset]
        return {"base_acc": base, "new_acc": new, "hm": hm}
    if setting != "base2new" and dataset in reference.all_classes:
        return {"acc": reference.all_classes[dataset]}
    return None


def self_check(
    model: str,
    pretrained: str,
    activation: str,
    dataset: str,
    setting: str,
    comparable: bool,
    measured: Mapping[str, float | None],
    template: str,
) -> dict[str, Any] | None:
    """Compare a run's zero-shot (published protocol) with the published numbers; None when there are none.

    Logs the differences, and a warning naming the likely causes when one is more than
    :data:`TOLERANCE` points off. ``comparable`` is False for a split other than the published one (a
    random split, capped evaluation): the numbers are then compared for information only.
    """
    reference = reference_for(model, pretrained)
    published = published_zero_shot(reference, dataset, setting) if reference else None
    if reference is None or published is None:
        return None
    differences = {k: round(float(measured[k]) - v, 4) for k, v in published.items() if measured.get(k) is not None}
    worst = max((abs(d) for d in differences.values()), default=math.nan)
    ok = bool(differences) and worst <= TOLERANCE
    check = {
        "reference": reference.name,
        "source": reference.source,
        "template": template,
        "published": published,
        "measured": {k: measured.get(k) for k in published},
        "difference": differences,
        "tolerance": TOLERANCE,
        "comparable": comparable,
        "ok": ok,
    }
    shown = ", ".join(
        f"{k} {measured[k]:.2f} vs {v:.2f} ({differences[k]:+.2f})" if k in differences else f"{k} n/a vs {v:.2f}"
        for k, v in published.items()
    )
    logger.info("zero-shot self-check against %s on %s: %s", reference.name, dataset, shown)
    if not ok:
        causes = list(LIKELY_CAUSES)
        if activation != reference.activation:
            causes.insert(
                0, f"the network was built with {activation}, the published numbers with {reference.activation}"
            )
        note = (
            "" if comparable else " (this run's split or evaluation is not the published one, which alone explains it)"
        )
        logger.warning(
            "zero-shot on %s is %.2f points off the published %s numbers%s. Likely causes: %s",
            dataset,
            worst,
            reference.name,
            note,
            "; ".join(causes),
        )
    return check
