"""Linear probe, CoOp's protocol: logistic regression on frozen, L2-normalised image features.

Features are those of the test transform (no augmentation) of the few-shot train and val images.
The inverse regularisation strength C is chosen on the few-shot val split, never on the test set:
a coarse sweep over 1e6, 1e4, ..., 1e-6, then a bisection in log10(C) around the best value, as
CoOp's ``lpclip`` does; ties go to the smaller C (the stronger regulariser). The probe is fit on
the train images with the chosen C and stored on the model as ``probe`` (weight, bias), so it is
checkpointed like any trained tensor. Datasets whose val split is their test split (ImageNet)
get a val draw of min(K, 4) images per class from the train images the few-shot draw left out.

In base-to-new the probe has no text side and cannot score new classes: New and HM are reported
as not applicable (None).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any

import numpy as np
import torch

from clipfit.data.loaders import eval_loader
from clipfit.data.prepare import RunData
from clipfit.data.sampling import few_shot_split
from clipfit.data.testcache import TestImages
from clipfit.errors import ClipfitError
from clipfit.evaluate import EvalSettings, cap_samples, image_features
from clipfit.models import ModelBundle
from clipfit.runtime import all_reduce_sum

logger = logging.getLogger(__name__)

COARSE_GRID = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)


def _fit(x: np.ndarray, y: np.ndarray, c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=1000, random_state=seed).fit(x, y)


def _accuracy(clf: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float((clf.predict(x) == y).mean()) if len(y) else 0.0


def search_c(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, steps: int = 4, seed: int = 0
) -> tuple[float, list[tuple[float, float]]]:
    """The C with the best val accuracy, and every (C, val accuracy) tried, in order."""
    tried: list[tuple[float, float]] = []

    def score(c: float) -> float:
        acc = _accuracy(_fit(train_x, train_y, c, seed), val_x, val_y)
        tried.append((c, acc))
        return acc

    coarse = [score(c) for c in COARSE_GRID]
    best = max(range(len(COARSE_GRID)), key=lambda i: (coarse[i], -COARSE_GRID[i]))
    low, high = math.log10(COARSE_GRID[best]) - 1, math.log10(COARSE_GRID[best]) + 1
    for _ in range(steps):
        acc_low, acc_high = score(10**low), score(10**high)
        middle = (low + high) / 2
        if acc_low < acc_high:
            low = middle
        else:
            high = middle
    best_c, _ = max(tried, key=lambda t: (t[1], -t[0]))
    return best_c, tried


def _features(bundle: ModelBundle, samples, dataset, settings: EvalSettings) -> tuple[np.ndarray, np.ndarray]:
    workers = settings.workers(dataset)
    loader = eval_loader(samples, dataset.reader, bundle.preprocess, settings.batch_size, workers)
    feats, labels = image_features(bundle.model, loader, settings.device, settings.precision, "probe features")
    return feats.cpu().numpy(), labels.cpu().numpy()


def _val_samples(data, seed: int) -> list:
    if data.dataset.fewshot_val:
        return data.val
    used = {s.path for s in data.train}
    rest = [s for s in data.dataset.train if s.path not in used]
    shots = max(Counter(s.label for s in data.train).values(), default=1)
    _, val = few_shot_split([], rest, shots, seed)
    return data.train_subset.relabel(val)


def fit_linear_probe(bundle: ModelBundle, data: RunData, settings: EvalSettings, seed: int) -> dict[str, Any]:
    """Fit the probe on the few-shot train images (C chosen on val) into ``bundle.model.probe``."""
    train_x, train_y = _features(bundle, data.train, data.dataset, settings)
    val = _val_samples(data, seed)
    if not val:
        raise ClipfitError(f"the linear probe needs a validation split to choose C; {data.dataset.name} has none")
    val_x, val_y = _features(bundle, val, data.dataset, settings)
    if len(set(train_y.tolist())) < 2:
        raise ClipfitError("the linear probe needs at least two classes in the training images")
    best_c, tried = search_c(train_x, train_y, val_x, val_y, seed=seed)
    clf = _fit(train_x, train_y, best_c, seed)
    n_classes = len(data.train_subset.classnames)
    weight = np.zeros((n_classes, train_x.shape[1]), dtype=np.float32)
    bias = np.zeros(n_classes, dtype=np.float32)
    if clf.coef_.shape[0] == 1:  # scikit-learn's binary case: one row scores class 1 against class 0
        weight[clf.classes_[1]], bias[clf.classes_[1]] = clf.coef_[0], clf.intercept_[0]
    else:
        weight[clf.classes_], bias[clf.classes_] = clf.coef_, clf.intercept_
    with torch.no_grad():
        bundle.model.probe.weight.copy_(torch.from_numpy(weight))
        bundle.model.probe.bias.copy_(torch.from_numpy(bias))
    val_acc = dict(tried)[best_c]
    logger.info("linear probe: C = %.3g chosen on %d val images (val acc %.2f%%)", best_c, len(val_y), 100 * val_acc)
    return {"C": best_c, "val_acc": round(100 * val_acc, 4), "val_images": len(val_y), "search": tried}


@torch.no_grad()
def evaluate_linear_probe(bundle: ModelBundle, data: RunData, settings: EvalSettings) -> dict[str, Any]:
    """Probe accuracy on the training label space's test images; New/HM are None in base-to-new."""
    subset, env, device = data.train_subset, settings.env, settings.device
    wanted = set(subset.labels)
    test = subset.relabel(cap_samples([s for s in data.dataset.test if s.label in wanted], settings.max_images))
    loader = TestImages.of(data.dataset, bundle.preprocess, settings.cache).batches(
        test,
        settings.batch_size,
        device,
        num_workers=settings.workers(data.dataset),
        build=settings.max_images is None,
        rank=env.rank,
        world_size=env.world_size,
    )
    feats, labels = image_features(bundle.model, loader, device, settings.precision, "eval probe")
    probe = bundle.model.probe
    correct = (feats @ probe.weight.T.float() + probe.bias.float()).argmax(1).eq(labels).sum()
    counts = all_reduce_sum(torch.stack([correct.double(), torch.tensor(float(len(labels)), device=device)]))
    acc = round(100.0 * counts[0].item() / max(1.0, counts[1].item()), 4)
    if "all" in data.subsets:
        return {"acc": acc}
    return {"base_acc": acc, "new_acc": None, "hm": None}
