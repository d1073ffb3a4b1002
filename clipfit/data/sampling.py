"""Few-shot subsets and base/new class splits, exactly as CoOp/Dassl draw them (PAPER.md section 6).

Dassl seeds Python's ``random`` with the run seed and then, with nothing else drawing from it,
groups the train list by label in order of first appearance (items keep list order inside a
group) and takes ``random.sample(group, K)`` per group (a smaller group is taken whole); then the
same on the val list with ``min(K, 4)``. With the same split file and seed this reproduces
CoOp's subsets image for image. clipfit uses a private ``random.Random(seed)`` so nothing else
in the process can shift the draw; its sequence is the same as the seeded global generator.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from clipfit.data.base import Dataset, Sample


def group_by_label(items: Sequence[Sample]) -> dict[int, list[Sample]]:
    """Groups in order of each label's first appearance; items keep their list order."""
    groups: dict[int, list[Sample]] = {}
    for item in items:
        groups.setdefault(item.label, []).append(item)
    return groups


def sample_few_shot(items: Sequence[Sample], shots: int, rng: random.Random) -> list[Sample]:
    """Dassl's ``generate_fewshot_dataset`` (repeat=False): ``rng.sample(group, shots)`` per label."""
    if shots < 1:
        return list(items)
    out: list[Sample] = []
    for group in group_by_label(items).values():
        out.extend(rng.sample(group, shots) if len(group) >= shots else group)
    return out


def few_shot_split(
    train: Sequence[Sample], val: Sequence[Sample], shots: int, seed: int, sample_val: bool = True
) -> tuple[list[Sample], list[Sample]]:
    """The K-shot train subset and the min(K, 4)-shot val subset for a seed (ImageNet: train only)."""
    rng = random.Random(seed)
    few_train = sample_few_shot(train, shots, rng)
    few_val = sample_few_shot(val, min(shots, 4), rng) if sample_val else list(val)
    return few_train, few_val


@dataclass(frozen=True)
class ClassSubset:
    """A subset of a dataset's classes with its relabelling."""

    name: str  # "base", "new" or "all"
    labels: tuple[int, ...]  # original labels, sorted
    classnames: tuple[str, ...]  # names in new-label order

    def relabel(self, items: Sequence[Sample]) -> list[Sample]:
        """Keep the items of this subset and relabel them 0..k-1 in sorted-original-label order."""
        index = {label: i for i, label in enumerate(self.labels)}
        return [replace(s, label=index[s.label]) for s in items if s.label in index]


def class_subsets(dataset: Dataset, train: Sequence[Sample], setting: str) -> dict[str, ClassSubset]:
    """The label spaces of a setting: {"base", "new"} for base2new (labels present in the few-shot
    train list, sorted; base = the first ceil(n/2)), {"all"} otherwise."""
    if setting == "base2new":
        labels = sorted({s.label for s in train})
        cut = math.ceil(len(labels) / 2)
        groups = {"base": labels[:cut], "new": labels[cut:]}
    elif setting in ("fewshot", "all", "eval"):
        groups = {"all": list(range(len(dataset.classnames)))}
    else:
        raise ValueError(f"unknown setting '{setting}'; expected base2new or fewshot")
    return {
        name: ClassSubset(name, tuple(labels), tuple(dataset.classnames[i] for i in labels))
        for name, labels in groups.items()
    }
