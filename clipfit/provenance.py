"""What produced a number: the versions of the software, and the signature of a result.

A signature names everything that determines a run's numbers in one line (sacrebleu's idea):
``model:ViT-B-16|pretrained:openai|act:quickgelu|recipe:clipfit|dataset:dtd|setting:base2new|shots:16|``
``epochs:10|lambda:8|seed:1|version:0.1.0``. Run directories, checkpoints, analysis sidecars and the
report all carry it.
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
    model: str,
    pretrained: str,
    recipe: str,
    dataset: str,
    seed: int | str,
    activation: str | None = None,
    *,
    setting: str | None = None,
    shots: int | str | None = None,
    epochs: int | None = None,
    reg_weight: float | None = None,
) -> str:
    """``model:ViT-B-16|pretrained:openai|act:quickgelu|recipe:clipfit|dataset:dtd|setting:base2new|shots:16|
    epochs:10|lambda:8|seed:1|version:0.1.0``: everything that decides a run's numbers, in one line.

    A field given as None is left out (``act`` in records of versions that did not note it; the protocol
    fields where there is no training run behind the number, e.g. zero-shot screening of weights).
    """
    fields = {
        "model": model,
        "pretrained": pretrained,
        "act": activation,
        "recipe": recipe,
        "dataset": dataset,
        "setting": setting,
        "shots": shots,
        "epochs": epochs,
        "lambda": None if reg_weight is None else f"{reg_weight:g}",
        "seed": seed,
        "version": clipfit.__version__,
    }
    return "|".join(f"{key}:{value}" for key, value in fields.items() if value is not None)
