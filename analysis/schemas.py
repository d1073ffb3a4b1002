"""The columns of every table clipfit-analyze writes, in order: the contract between analysis and figures.

Each analysis returns a DataFrame with exactly these columns (see :func:`conform`); the figure
modules read only these columns, the CSV files carry them as their header, and README "Analysis"
documents them. This module imports nothing heavy, so ``figures`` can depend on it alone.

Layer columns come from :mod:`clipfit.layers` (the one definition of "layer"):
``name`` full parameter name, ``tower`` image/text, ``group`` e.g. "text FFN-out bias",
``block`` transformer block index (empty outside the blocks), ``module`` and ``kind``,
``position`` the short axis label ("ln_pre", "3.ln_1", "0.mlp.c_proj"), ``order`` the forward order.
"""

from __future__ import annotations

import math
from typing import Any

LAYER = ("name", "tower", "group", "block", "module", "kind", "position", "order")

# param-change (paper Fig. 3, Fig. 4 right): one row per checkpoint and trained tensor.
PARAM_CHANGE = ("checkpoint", *LAYER, "numel", "init_norm", "sq_change", "l2_change", "rel_change")
# param-change over training, from a run's layers.jsonl: one row per checkpoint, logged step and tensor.
PARAM_STEPS = ("checkpoint", "step", "epoch", *LAYER, "sq_change")
# param-change over the runs (seeds) of each configuration: mean and sample std per tensor.
PARAM_CONFIGS = (
    "configuration", "runs", "seeds", *LAYER, "numel", "sq_change_mean", "sq_change_std", "l2_change_mean",
    "l2_change_std", "rel_change_mean", "rel_change_std",
)  # fmt: skip
# param-change per layer group (level "group") or module family (level "family"): summed and per value,
# mean and sample std over the runs of each configuration.
PARAM_GROUPS = (
    "configuration", "runs", "seeds", "level", "tower", "group", "tensors", "numel", "sq_change_mean",
    "sq_change_std", "per_value_mean", "per_value_std",
)  # fmt: skip
# a whole-model change in depth: per checkpoint, tower, module family and position (pre, block, post).
PARAM_FAMILIES = (
    "checkpoint", "tower", "family", "stage", "block", "position", "order", "tensors", "numel", "sq_change",
    "per_value",
)  # fmt: skip

# grad-sums screening at fixed values: one row per candidate tensor, ranked by grad_sq_sum.
GRAD_SUMS = ("rank", *LAYER, "numel", "in_recipe", "batches", "grad_sq_sum", "grad_sq_per_value")
# paper Fig. 4 left: each trained tensor's squared gradients summed over every training step (layers.jsonl).
GRAD_TRAINING = ("checkpoint", *LAYER, "numel", "steps", "grad_sq_sum", "grad_sq_per_value")
# Fig. 4 left over the runs (seeds) of each configuration: mean and sample std per tensor.
GRAD_TRAINING_CONFIGS = (
    "configuration", "runs", "seeds", *LAYER, "numel", "steps", "grad_sq_sum_mean", "grad_sq_sum_std",
    "grad_sq_per_value_mean", "grad_sq_per_value_std",
)  # fmt: skip
# per-step squared gradient sums of the trained tensors, from a run's layers.jsonl.
GRAD_STEPS = ("checkpoint", "step", "epoch", *LAYER, "grad_sq", "grad_sq_cum")

# tsne (paper Fig. 5): one row per model and image.
TSNE = ("model", "index", "label", "classname", "x", "y")
# tsne's numbers that do not depend on the picture: one row per model.
TSNE_METRICS = ("model", "images", "classes", "silhouette", "knn_acc", "k")

# per-class: zero-shot against fine-tuned accuracy (percent) of every class, one row per run, label space and class;
# text_cos = cos(t_c, t0_c) of the fine-tuned and the zero-shot class feature.
PER_CLASS = (
    "checkpoint", "configuration", "subset", "label", "classname", "images", "zs_correct", "ft_correct", "zs_acc",
    "ft_acc", "delta", "text_cos",
)  # fmt: skip
# per-class over the runs (seeds) of each configuration: mean and sample std.
PER_CLASS_CONFIGS = (
    "configuration", "runs", "subset", "label", "classname", "images", "zs_acc_mean", "zs_acc_std", "ft_acc_mean",
    "ft_acc_std", "delta_mean", "delta_std", "text_cos_mean", "text_cos_std",
)  # fmt: skip
# the confusions of each configuration's worst classes: predictions per (true, predicted) class, summed over runs.
CONFUSION_CHANGE = (
    "configuration", "runs", "subset", "true_label", "true_class", "pred_label", "pred_class", "zs_count", "ft_count",
    "change",
)  # fmt: skip
# Pearson and Spearman correlation of text_cos and delta over the classes of a label space (or all).
CLASS_CORRELATION = ("configuration", "runs", "subset", "classes", "pearson", "spearman")

# channels of the 1-D tensors (LayerNorm gains and biases, biases): one row per checkpoint, tensor and channel;
# rank 1 = the channel of its tensor that moved most.
CHANNELS = ("checkpoint", "configuration", *LAYER, "channel", "init", "final", "change", "sq_change", "rank")
# how concentrated each 1-D tensor's change is: share of the squared change in its top 1% / 10% of channels, Gini.
CHANNEL_CONCENTRATION = (
    "checkpoint", "configuration", *LAYER, "channels", "sq_change", "top1_share", "top10_share", "gini",
    "top_channel", "top_change",
)  # fmt: skip

# grad-cos: cosine between successive gradients of each trained tensor, from layers.jsonl (one row per logged step).
GRAD_COS_STEPS = ("checkpoint", "configuration", "step", "epoch", *LAYER, "grad_cos")
# grad-cos over training per tensor: mean, over the first and the last 10% of the records, share of positive ones.
GRAD_COS = (
    "checkpoint", "configuration", *LAYER, "records", "mean_cos", "early_cos", "late_cos", "positive_share",
)  # fmt: skip

# rep-change: linear CKA between pretrained and fine-tuned hidden states, one row per tower and block, and the shift
# of the mean hidden state relative to the pretrained mean's norm (which CKA, centring the features, cannot see).
REP_CHANGE = ("tower", "block", "position", "order", "inputs", "cka", "mean_shift")
# rep-change of several runs: each run's rows, and per configuration the mean and sample std over its seeds.
REP_RUNS = ("checkpoint", "configuration", *REP_CHANGE)
REP_CONFIGS = (
    "configuration", "runs", "tower", "block", "position", "order", "inputs", "cka_mean", "cka_std", "mean_shift_mean",
    "mean_shift_std",
)  # fmt: skip

# training curves from metrics.jsonl: one row per run, logged step and metric (loss, ce, reg, acc, val_acc, lr).
TRAINING_CURVES = ("checkpoint", "configuration", "step", "epoch", "metric", "value")
# the training curves over the runs (seeds) of each configuration: mean and sample std per metric and step.
TRAINING_CURVE_CONFIGS = ("configuration", "runs", "metric", "step", "epoch", "value_mean", "value_std")

# results: one row per results.json found under the run root.
RESULTS_RUNS = (
    "path",
    "dataset",
    "setting",
    "method",
    "recipe",
    "model",
    "pretrained",
    "shots",
    "seed",
    "reg_weight",
    "source_dataset",
    "base_acc",
    "new_acc",
    "hm",
    "acc",
    "zs_base_acc",
    "zs_new_acc",
    "zs_hm",
    "zs_acc",
    "zsp_base_acc",
    "zsp_new_acc",
    "zsp_hm",
    "zsp_acc",
    "pub_base_acc",
    "pub_new_acc",
    "pub_hm",
    "pub_acc",
    "comparable",
    "precision",
    "signature",
    "clipfit_version",
    "torch_version",
)
# base-to-new over seeds; hm = HM(base_mean, new_mean), hm_std = std of the per-seed HMs.
BASE2NEW = (
    "method",
    "model",
    "pretrained",
    "dataset",
    "seeds",
    "base_mean",
    "base_std",
    "new_mean",
    "new_std",
    "hm",
    "hm_std",
    "comparable",
    "source",
)
# few-shot accuracy over seeds; zero-shot is the 0-shot point.
FEWSHOT = ("method", "model", "pretrained", "dataset", "shots", "seeds", "acc_mean", "acc_std", "comparable", "source")
# cross-dataset transfer and domain generalisation (clipfit-eval results), over seeds.
EVAL = (
    "kind",
    "method",
    "model",
    "pretrained",
    "source_dataset",
    "dataset",
    "seeds",
    "acc_mean",
    "acc_std",
    "zero_shot_mean",
    "comparable",
    "source",
)

# the zero-shot self-check of runs whose model has published numbers: one row per dataset, setting and metric;
# measured = mean over the runs of the zero-shot under the published protocol.
SELF_CHECK = (
    "model", "pretrained", "dataset", "setting", "metric", "published", "measured", "difference", "within_tolerance",
)  # fmt: skip
# the measured 11-dataset averages against the paper's (base-to-new), and ClipFit's gain over zero-shot.
PAPER_COMPARISON = (
    "method", "published_method", "datasets", "base", "new", "hm", "published_base", "published_new", "published_hm",
    "hm_difference",
)  # fmt: skip

ALL = {
    "param_change": PARAM_CHANGE,
    "param_change_steps": PARAM_STEPS,
    "param_change_configs": PARAM_CONFIGS,
    "param_change_groups": PARAM_GROUPS,
    "param_change_families": PARAM_FAMILIES,
    "grad_sums": GRAD_SUMS,
    "grad_sums_training": GRAD_TRAINING,
    "grad_sums_training_configs": GRAD_TRAINING_CONFIGS,
    "grad_sums_steps": GRAD_STEPS,
    "tsne": TSNE,
    "tsne_metrics": TSNE_METRICS,
    "rep_change": REP_CHANGE,
    "rep_change_runs": REP_RUNS,
    "rep_change_configs": REP_CONFIGS,
    "channels": CHANNELS,
    "channel_concentration": CHANNEL_CONCENTRATION,
    "grad_cos_steps": GRAD_COS_STEPS,
    "grad_cos": GRAD_COS,
    "per_class": PER_CLASS,
    "per_class_configs": PER_CLASS_CONFIGS,
    "per_class_confusion": CONFUSION_CHANGE,
    "per_class_correlation": CLASS_CORRELATION,
    "training_curves": TRAINING_CURVES,
    "training_curves_configs": TRAINING_CURVE_CONFIGS,
    "results_runs": RESULTS_RUNS,
    "results_base2new": BASE2NEW,
    "results_fewshot": FEWSHOT,
    "results_eval": EVAL,
    "results_self_check": SELF_CHECK,
    "results_paper": PAPER_COMPARISON,
}


def conform(frame, columns: tuple[str, ...]):
    """``frame`` with exactly ``columns``, in order (missing ones raise: a bug, not bad input)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"table lacks columns {missing}; has {list(frame.columns)}")
    return frame.loc[:, list(columns)].reset_index(drop=True)


# A run's shots: a count of images per class, or "all" (clipfit-train --shots all: every training image).
ALL_SHOTS = "all"  # clipfit.data.sampling.ALL_SHOTS (figures/ reads this module, not clipfit's)


def shots_value(shots: Any) -> int | str:
    """A shots cell: an int, or "all"."""
    return shots if shots == ALL_SHOTS else int(shots)


def shots_order(shots: Any) -> float:
    """Where a shots value sorts: by count, "all" after every count."""
    return math.inf if shots == ALL_SHOTS else float(shots)


def shots_text(shots: Any) -> str:
    return ALL_SHOTS if shots == ALL_SHOTS else f"{float(shots):g}"
