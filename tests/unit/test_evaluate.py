"""Evaluation refuses a label space without test images instead of scoring it 0%."""

from __future__ import annotations

import pytest
import torch

from clipfit.data.base import DataError
from clipfit.data.sampling import ClassSubset
from clipfit.evaluate import subset_accuracy
from clipfit.models import build_model


def test_a_label_space_without_test_images_is_an_error_not_zero_percent():
    bundle = build_model("clipfit-tiny", "none")
    subset = ClassSubset("new", (2, 3), ("cat", "dog"))
    with pytest.raises(DataError, match="no test images in label space 'new' \\(2 classes\\)"):
        subset_accuracy(
            bundle.model, bundle.tokenizer, subset, "a photo of a {}.", [], None, bundle.preprocess,
            torch.device("cpu"),
        )  # fmt: skip
