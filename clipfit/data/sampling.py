"""Few-shot subsets and base/new class splits, exactly as CoOp/Dassl draw them (PAPER.md section 6).

Dassl seeds Python's ``random`` with the run seed and then, with nothing else drawing from it,
groups the train list by label in order of first appearance (items keep list order inside a
group) and takes ``random.sample(group, K)`` per group (a smaller group is taken whole); then the
same on the val list with ``min(K, 4)``. With the same split file and seed this reproduces
CoOp's subsets image for image. clipfit uses a private ``random.Random(seed)`` so nothing else
in the process can shift the draw; its sequence is the same as the seeded global generator.

Each draw is saved as JSON in the split-file format, ``{"train": [[path, label, classname], ...],
"val": [...]}``, at ``<dataset folder>/split_fewshot/shot_<K>-seed_<S>.json`` (CoOp keeps pickles
there), or under clipfit's cache directory when the dataset folder cannot be written, and reused
when present. Reading JSON never runs code, unlike CoOp's pickles, which clipfit does not read.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from clipfit.data.base import DataError, Dataset, Sample
from clipfit.data.splits import read_split_file, write_split_file

logger = logging.getLogger(__name__)
FEWSHOT_DIR = "split_fewshot"
ALL_SHOTS = "all"  # --shots all: every training image


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


def fewshot_file_name(shots: int, seed: int) -> str:
    return f"shot_{shots}-seed_{seed}.json"


@dataclass(frozen=True)
class FewShotDraw:
    """A seed's few-shot subsets and the file they were saved to (or read from)."""

    train: list[Sample]
    val: list[Sample]
    path: Path | None  # None when the dataset does not save draws (generated data)
    reused: bool  # True when the draw was read from an existing file


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (created if missing); probes instead of trusting modes."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".clipfit-write-probe-{random.getrandbits(32):08x}"
        probe.touch()
        probe.unlink()
        return True
    except OSError:
        return False


def _check_cached(path: Path, cached: dict[str, list[Sample]], dataset: Dataset) -> None:
    """A saved draw must come from the current split: every entry must still be in it."""
    for key, pool in (("train", dataset.train), ("val", dataset.val)):
        known = set(pool)
        stale = [s for s in cached[key] if s not in known]
        if stale:
            raise DataError(
                f"the few-shot file {path} does not match the current split of '{dataset.name}' (its '{key}' entry "
                f"{stale[0].to_json()} is not in the split). It was drawn from another split file or class-name "
                "list; delete it to draw again."
            )


def draw_few_shot(dataset: Dataset, shots: int | str, seed: int) -> FewShotDraw:
    """The seed's K-shot train and min(K, 4)-shot val subsets, read from their JSON file when it exists.

    Otherwise they are drawn with Dassl's algorithm and saved: in ``dataset.fewshot_dir`` when it
    can be written, else in ``dataset.fewshot_fallback`` (clipfit's cache directory). Only new
    files are created; nothing of the dataset is modified. A dataset without a val sampling step
    (ImageNet) saves ``"val": []`` and keeps its whole val list. ``shots="all"`` takes every train
    and val image (nothing is drawn, nothing saved).
    """
    if shots == ALL_SHOTS:
        return FewShotDraw(list(dataset.train), list(dataset.val), None, False)
    name = fewshot_file_name(shots, seed)
    folders = [d for d in (dataset.fewshot_dir, dataset.fewshot_fallback) if d is not None]
    for folder in folders:
        path = folder / name
        if path.exists() and not path.is_file():
            raise DataError(f"the few-shot file {path} is a folder, not a file; remove it to draw again")
        if path.is_file():
            # any path: every entry must be in the current split, which _check_cached enforces
            cached = read_split_file(path, keys=("train", "val"), any_path=True)
            if not cached["train"]:
                raise DataError(f"the few-shot file {path} lists no training images; delete it to draw again")
            if not dataset.fewshot_val:
                cached["val"] = list(dataset.val)
            _check_cached(path, cached, dataset)
            logger.info("few-shot draw: reusing %s", path)
            return FewShotDraw(cached["train"], cached["val"], path, True)
    train, val = few_shot_split(dataset.train, dataset.val, shots, seed, sample_val=dataset.fewshot_val)
    for folder in folders:
        if _writable(folder):
            path = folder / name
            write_split_file(path, {"train": train, "val": val if dataset.fewshot_val else []})
            logger.info("few-shot draw: saved %s", path)
            return FewShotDraw(train, val, path, False)
        logger.info("few-shot draw: %s is not writable", folder)
    if folders:
        logger.warning("few-shot draw of %s not saved: none of %s can be written", dataset.name, folders)
    return FewShotDraw(train, val, None, False)


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
