"""The data of one run: the dataset, the seed's few-shot draw and the setting's label spaces.

Before any model is built, every image the run will read (the few-shot draw and the test split) is
checked (:mod:`clipfit.data.verify`): bad files stop the run with their list, or are left out with
``--skip-bad-images`` and recorded; a label space of fewer than two classes is refused (an accuracy
among one class is 100% whatever the model does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clipfit.config import RunConfig
from clipfit.data.base import DataError, Dataset, Sample
from clipfit.data.registry import get_spec, load_dataset
from clipfit.data.sampling import ClassSubset, class_subsets, draw_few_shot
from clipfit.data.verify import BadImage, check_images, without
from clipfit.prompts import check_template


@dataclass
class RunData:
    """The data of a run: the dataset, its few-shot draw, and the label spaces."""

    dataset: Dataset
    template: str  # the fine-tuning template (--template, else the dataset's)
    published_template: str  # the template of the dataset's published zero-shot numbers (CoOp's ZeroshotCLIP)
    train: list[Sample]  # few-shot train images, relabelled to the training label space
    val: list[Sample]  # few-shot val images, relabelled likewise
    subsets: dict[str, ClassSubset]  # "base"/"new" or "all"
    train_subset: ClassSubset  # the label space training uses ("base" or "all")
    bad_images: list[BadImage] = field(default_factory=list)  # left out (--skip-bad-images); the run is not comparable

    def summary(self) -> str:
        spaces = ", ".join(f"{k}: {len(v.labels)} classes" for k, v in self.subsets.items())
        left_out = f"; {len(self.bad_images)} unreadable images left out" if self.bad_images else ""
        return (
            f"data: {self.dataset.summary()}; few-shot draw: {len(self.train)} train / {len(self.val)} val; "
            f"{spaces}; template {self.template!r}{left_out}"
        )


def check_label_spaces(subsets: dict[str, ClassSubset], dataset: Dataset) -> None:
    """Refuse a label space of fewer than two classes: its accuracy would be 100% (or undefined) whatever the model."""
    for name, subset in subsets.items():
        if len(subset.labels) < 2:
            need = " (base-to-new splits the classes in two: at least 4 with training images)" if name != "all" else ""
            raise DataError(
                f"{dataset.name}: the label space '{name}' has {len(subset.labels)} class(es); a classifier needs at "
                f"least 2{need}. The dataset has {len(dataset.classnames)} classes ({dataset.split_source})"
            )


def prepare_data(cfg: RunConfig) -> RunData:
    """Load the dataset, draw the seed's few-shot subsets (Dassl's algorithm), split the classes, check the images.

    The draw is saved as ``split_fewshot/shot_<K>-seed_<S>.json`` (or read from it), see
    :func:`clipfit.data.sampling.draw_few_shot`.
    """
    spec = get_spec(cfg.data.dataset)
    if spec.test_only:
        raise DataError(f"dataset '{spec.name}' is test-only; train on another and evaluate with clipfit-eval")
    dataset = load_dataset(
        cfg.data.dataset, cfg.data.data_root, make_split=cfg.data.make_split, classnames=cfg.data.classnames
    )
    if not dataset.train:
        raise DataError(f"dataset '{dataset.name}' has no training images ({dataset.split_source})")
    if not dataset.test:
        raise DataError(f"dataset '{dataset.name}' has no test images ({dataset.split_source})")
    template = check_template(cfg.data.template or dataset.template)
    published_template = spec.zeroshot_template or dataset.template
    draw = draw_few_shot(dataset, cfg.data.shots, cfg.seed)
    subsets = class_subsets(dataset, draw.train, cfg.data.setting)
    check_label_spaces(subsets, dataset)
    groups = {"few-shot train": draw.train, "few-shot val": draw.val, "test": dataset.test}
    bad = check_images(groups, dataset.reader, dataset.name, cfg.data.skip_bad_images)
    train, val = without(draw.train, bad), without(draw.val, bad)
    if bad:
        dataset.test, dataset.comparable = without(dataset.test, bad), False
        if not train:
            raise DataError(f"{dataset.name}: every few-shot training image is unreadable; nothing left to train on")
    train_subset = subsets["base"] if cfg.data.setting == "base2new" else subsets["all"]
    return RunData(
        dataset,
        template,
        published_template,
        train_subset.relabel(train),
        train_subset.relabel(val),
        subsets,
        train_subset,
        bad,
    )
