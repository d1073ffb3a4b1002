"""The data of one run: the dataset, the seed's few-shot draw and the setting's label spaces."""

from __future__ import annotations

from dataclasses import dataclass

from clipfit.config import RunConfig
from clipfit.data.base import DataError, Dataset, Sample
from clipfit.data.registry import get_spec, load_dataset
from clipfit.data.sampling import ClassSubset, class_subsets, draw_few_shot
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

    def summary(self) -> str:
        spaces = ", ".join(f"{k}: {len(v.labels)} classes" for k, v in self.subsets.items())
        return (
            f"data: {self.dataset.summary()}; few-shot draw: {len(self.train)} train / {len(self.val)} val; "
            f"{spaces}; template {self.template!r}"
        )


def prepare_data(cfg: RunConfig) -> RunData:
    """Load the dataset, draw the seed's few-shot subsets (Dassl's algorithm) and split the classes.

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
    template = check_template(cfg.data.template or dataset.template)
    published_template = spec.zeroshot_template or dataset.template
    draw = draw_few_shot(dataset, cfg.data.shots, cfg.seed)
    subsets = class_subsets(dataset, draw.train, cfg.data.setting)
    train_subset = subsets["base"] if cfg.data.setting == "base2new" else subsets["all"]
    return RunData(
        dataset,
        template,
        published_template,
        train_subset.relabel(draw.train),
        train_subset.relabel(draw.val),
        subsets,
        train_subset,
    )
