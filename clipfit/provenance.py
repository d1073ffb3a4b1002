"""What produced a number: the versions of the software, and the signature of a result.

A signature names everything that determines a run's numbers in one line (sacrebleu's idea):
``model:ViT-B-16|pretrained:openai|act:quickgelu|recipe:clipfit|dataset:dtd|seed:1|version:0.1.0``. Run
directories, checkpoints, analysis sidecars and the report all carry it.
"""

from __future__ import annotations

import platform

import open_clip
import torch

import clipfit


def versions() -> dict[str, str]:
    """The versions of clipfit, open_clip, torch and Python."""
    return {
        "clipfit": clipfit.__version__,
        "open_clip": open_clip.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def signature(
    model: str, pretrained: str, recipe: str, dataset: str, seed: int | str, activation: str | None = None
) -> str:
    """``model:ViT-B-16|pretrained:openai|act:quickgelu|recipe:clipfit|dataset:dtd|seed:1|version:0.1.0``.

    ``act`` (the MLP activation the network was built with) is left out when unknown (records of
    versions that did not note it).
    """
    act = f"|act:{activation}" if activation else ""
    return (
        f"model:{model}|pretrained:{pretrained}{act}|recipe:{recipe}|dataset:{dataset}|seed:{seed}"
        f"|version:{clipfit.__version__}"
    )
