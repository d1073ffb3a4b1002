"""Per class: zero-shot against fine-tuned accuracy, the confusions that changed, and how far each class's
text feature moved.

For every class c of a label space (base, new; all in few-shot runs) with test images I_c, the zero-shot
model (plain CLIP at the pretrained values) predicting z_i and the fine-tuned one (through the recipe's
head) predicting f_i:

    zs_acc(c) = 100 |{i in I_c : z_i = c}| / |I_c|,   ft_acc(c) = 100 |{i in I_c : f_i = c}| / |I_c|
    delta(c)  = ft_acc(c) - zs_acc(c)
    text_cos(c) = cos(t_c, t0_c)      (t_c the fine-tuned class feature, t0_c the zero-shot one; 1 = unmoved)

The confusion change of a class c is, for every predicted class k, |{i in I_c : f_i = k}| - |{i in I_c :
z_i = k}| (summed over the runs of a configuration). Over the classes of a label space, the correlation
between text_cos and delta is given as Pearson's r and Spearman's rho (Pearson's r of the average ranks).
Over the runs (seeds) of a configuration the per-class numbers are averaged (sample std beside them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.configs import over_runs
from analysis.errors import AnalysisError
from analysis.schemas import CLASS_CORRELATION, CONFUSION_CHANGE, PER_CLASS, PER_CLASS_CONFIGS, conform


def per_class_table(
    labels: Sequence[int],
    zero_shot: Sequence[int],
    fine_tuned: Sequence[int],
    classnames: Sequence[str],
    text_cos: Sequence[float],
    subset: str,
    checkpoint: str = "",
    configuration: str = "",
) -> pd.DataFrame:
    """The PER_CLASS rows of one label space of one run: a row per class (classes without test images are left out).

    Args:
        labels: each test image's class (an index into ``classnames``).
        zero_shot, fine_tuned: each image's predicted class under the two models.
        text_cos: cos(t_c, t0_c) of each class, in ``classnames`` order.
    """
    labels, zs, ft = (np.asarray(a, dtype=np.int64) for a in (labels, zero_shot, fine_tuned))
    if not len(labels) == len(zs) == len(ft):
        raise AnalysisError(f"{len(labels)} labels, {len(zs)} zero-shot and {len(ft)} fine-tuned predictions")
    if len(text_cos) != len(classnames):
        raise AnalysisError(f"{len(text_cos)} text cosines for {len(classnames)} classes")
    n = len(classnames)
    images = np.bincount(labels, minlength=n)
    zs_correct = np.bincount(labels[zs == labels], minlength=n)
    ft_correct = np.bincount(labels[ft == labels], minlength=n)
    frame = pd.DataFrame(
        {
            "checkpoint": checkpoint,
            "configuration": configuration,
            "subset": subset,
            "label": np.arange(n),
            "classname": list(classnames),
            "images": images,
            "zs_correct": zs_correct,
            "ft_correct": ft_correct,
            "text_cos": np.asarray(text_cos, dtype=np.float64),
        }
    )
    frame = frame[frame["images"] > 0].copy()
    frame["zs_acc"] = 100.0 * frame["zs_correct"] / frame["images"]
    frame["ft_acc"] = 100.0 * frame["ft_correct"] / frame["images"]
    frame["delta"] = frame["ft_acc"] - frame["zs_acc"]
    return conform(frame, PER_CLASS)


def confusion_counts(
    labels: Sequence[int],
    zero_shot: Sequence[int],
    fine_tuned: Sequence[int],
    classnames: Sequence[str],
    subset: str,
    checkpoint: str = "",
    configuration: str = "",
) -> pd.DataFrame:
    """Every (true, predicted) pair of one run and label space that either model predicted at least once,
    with both counts (``runs`` = 1; the CONFUSION_CHANGE columns plus ``checkpoint``)."""
    labels, zs, ft = (np.asarray(a, dtype=np.int64) for a in (labels, zero_shot, fine_tuned))
    n = len(classnames)
    zs_counts = np.zeros((n, n), dtype=np.int64)
    ft_counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(zs_counts, (labels, zs), 1)
    np.add.at(ft_counts, (labels, ft), 1)
    true, pred = np.nonzero((zs_counts > 0) | (ft_counts > 0))
    frame = pd.DataFrame(
        {
            "checkpoint": checkpoint,
            "configuration": configuration,
            "runs": 1,
            "subset": subset,
            "true_label": true,
            "true_class": [classnames[i] for i in true],
            "pred_label": pred,
            "pred_class": [classnames[i] for i in pred],
            "zs_count": zs_counts[true, pred],
            "ft_count": ft_counts[true, pred],
        }
    )
    frame["change"] = frame["ft_count"] - frame["zs_count"]
    return frame


def class_configs(per_class: pd.DataFrame) -> pd.DataFrame:
    """The PER_CLASS_CONFIGS table: each class's accuracies, delta and text_cos, mean (and std) over the runs
    of each configuration."""
    keys = ["configuration", "subset", "label", "classname", "images"]
    stats = over_runs(per_class, keys, ["zs_acc", "ft_acc", "delta", "text_cos"])
    return conform(stats, PER_CLASS_CONFIGS)


def worst_classes(configs: pd.DataFrame, k: int = 5) -> dict[str, list[tuple[str, int]]]:
    """configuration -> its ``k`` classes that lost most (lowest mean delta; then lowest fine-tuned accuracy),
    as (subset, label)."""
    out = {}
    for config, part in configs.groupby("configuration", sort=False):
        ranked = part.sort_values(["delta_mean", "ft_acc_mean"], kind="stable").head(k)
        out[config] = list(zip(ranked["subset"], ranked["label"].astype(int), strict=True))
    return out


def confusion_change(counts: pd.DataFrame, worst: dict[str, list[tuple[str, int]]]) -> pd.DataFrame:
    """The CONFUSION_CHANGE table: for each configuration's worst classes, the counts of every predicted class
    summed over the configuration's runs, largest absolute change first within each class."""
    rows = []
    for config, classes in worst.items():
        own = counts[counts["configuration"] == config]
        runs = own["checkpoint"].nunique()
        for rank, (subset, label) in enumerate(classes):
            part = own[(own["subset"] == subset) & (own["true_label"] == label)]
            keys = ["subset", "true_label", "true_class", "pred_label", "pred_class"]
            summed = part.groupby(keys, sort=False)[["zs_count", "ft_count", "change"]].sum().reset_index()
            summed["configuration"], summed["runs"], summed["rank"] = config, runs, rank
            summed["order"] = -summed["change"].abs()
            rows.append(summed.sort_values(["order", "pred_label"], kind="stable"))
    if not rows:
        return pd.DataFrame(columns=list(CONFUSION_CHANGE))
    return conform(pd.concat(rows, ignore_index=True), CONFUSION_CHANGE)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (1-based; ties share the mean of their ranks)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r of the finite pairs; NaN with fewer than 3 pairs or a constant variable."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    norm = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / norm) if norm > 0 else float("nan")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's r of the average ranks of the finite pairs."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    return pearson(_ranks(x[keep]), _ranks(y[keep])) if keep.sum() >= 3 else float("nan")


def correlations(configs: pd.DataFrame) -> pd.DataFrame:
    """The CLASS_CORRELATION table: per configuration and label space (and ``all`` of them), Pearson and
    Spearman correlation between each class's mean text_cos and mean delta."""
    rows = []
    for config, part in configs.groupby("configuration", sort=False):
        subsets = list(dict.fromkeys(part["subset"]))
        for subset in [*subsets, "all"] if len(subsets) > 1 else subsets:
            own = part if subset == "all" else part[part["subset"] == subset]
            rows.append(
                {
                    "configuration": config,
                    "runs": int(own["runs"].max()),
                    "subset": subset,
                    "classes": len(own),
                    "pearson": pearson(own["text_cos_mean"], own["delta_mean"]),
                    "spearman": spearman(own["text_cos_mean"], own["delta_mean"]),
                }
            )
    return conform(pd.DataFrame(rows, columns=list(CLASS_CORRELATION)), CLASS_CORRELATION)
