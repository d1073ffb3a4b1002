"""t-SNE of image features, zero-shot against fine-tuned (paper Fig. 5), with numbers that do not
depend on the picture.

The same test images are encoded by the pretrained and the fine-tuned model; each model's
L2-normalised features are embedded separately with scikit-learn's t-SNE (2-D, PCA init, fixed
``random_state``; perplexity capped at (n - 1) / 3 as t-SNE requires). Beside the pictures, two
numbers computed in the original feature space:

    silhouette = mean_i (b_i - a_i) / max(a_i, b_i), cosine distance, labels = classes
                 (a_i: mean distance to the own class, b_i: to the nearest other class)
    knn_acc    = 100 * mean_i [majority label of the k nearest other images (cosine) == label_i]
                 (leave-one-out; a tie goes to the class with the larger summed similarity)

With more classes than a picture can tell apart, k of the n classes are shown, spread over the label space
and over the words of the class names (:func:`spread`): the first class, then each time the class whose name
adds the most words not yet shown, among those the one farthest in label order from the classes chosen (the
largest distance to the nearest), then the lowest. Names that share words ("red circle", "red star", "blue
star") thus show every colour and shape before any twice; names that share no words are spread out in label
order, each the farthest from those already chosen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.schemas import TSNE, TSNE_METRICS, conform


def spread(classnames: Sequence[str], k: int) -> list[int]:
    """``k`` positions of ``classnames`` chosen as the module docstring says (all of them when k >= n), in the
    order chosen; deterministic. E.g. 4 of the shapes world's 32 base classes (8 colours of circle, then of
    triangle, star and ring): red circle, cyan ring, pink triangle, purple star."""
    n = len(classnames)
    if k >= n:
        return list(range(n))
    words = [set(name.lower().replace("_", " ").replace("-", " ").split()) for name in classnames]
    chosen, shown = [0], set(words[0])
    while len(chosen) < k:
        rest = [i for i in range(n) if i not in chosen]
        best = max(rest, key=lambda i: (len(words[i] - shown), min(abs(i - c) for c in chosen), -i))
        chosen.append(best)
        shown |= words[best]
    return chosen


def _normalise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1.0)


def knn_accuracy(features: np.ndarray, labels: Sequence[int], k: int = 5) -> float:
    """Leave-one-out k-NN accuracy (percent) with cosine similarity (see the module docstring)."""
    labels = np.asarray(labels)
    n = len(labels)
    if n < 2:
        raise AnalysisError("k-NN accuracy needs at least two images")
    k = max(1, min(k, n - 1))
    unit = _normalise(features)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    neighbours = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    classes = np.unique(labels)
    index = {c: i for i, c in enumerate(classes)}
    correct = 0
    for i in range(n):
        votes = np.zeros(len(classes))
        weight = np.zeros(len(classes))
        for j in neighbours[i]:
            votes[index[labels[j]]] += 1
            weight[index[labels[j]]] += sims[i, j]
        best = np.flatnonzero(votes == votes.max())
        winner = best[np.argmax(weight[best])]
        correct += classes[winner] == labels[i]
    return 100.0 * correct / n


def silhouette(features: np.ndarray, labels: Sequence[int]) -> float:
    """scikit-learn's silhouette score with cosine distance; NaN with fewer than 2 classes."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2 or len(np.unique(labels)) >= len(labels):
        return float("nan")
    return float(silhouette_score(_normalise(features), labels, metric="cosine"))


def embed(features: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of L2-normalised features (PCA init, fixed seed).

    Runs on one thread (OpenMP and BLAS): on a busy machine scikit-learn's threaded Barnes-Hut gradient spins
    (40 points took 40 s on 2 loaded cores, against 0.1 s single-threaded; 400 points take ~1.5 s).
    """
    from sklearn.manifold import TSNE as SklearnTSNE
    from threadpoolctl import threadpool_limits

    n = len(features)
    if n < 4:
        raise AnalysisError(f"t-SNE needs at least 4 images, got {n}")
    perplexity = float(min(perplexity, (n - 1) / 3))
    tsne = SklearnTSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, learning_rate="auto")
    with threadpool_limits(limits=1):
        return tsne.fit_transform(_normalise(features).astype(np.float32))


def tsne_tables(
    features: Mapping[str, np.ndarray],
    labels: Sequence[int],
    classnames: Sequence[str],
    perplexity: float = 30.0,
    seed: int = 0,
    k: int = 5,
    embedded: set[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The TSNE points and TSNE_METRICS of each model's features of the same images.

    Args:
        features: model label ("zero-shot", "fine-tuned") -> (n, d) features, rows aligned.
        labels: class index of each row, indexing ``classnames``.
        embedded: the models to embed (all when None); the others get their metrics only (several seeds
            of one configuration: one picture, the numbers of every seed).
    """
    labels = np.asarray(labels)
    points, metrics = [], []
    for model, feats in features.items():
        feats = np.asarray(feats)
        if len(feats) != len(labels):
            raise AnalysisError(f"{model}: {len(feats)} feature rows for {len(labels)} labels")
        if embedded is None or model in embedded:
            xy = embed(feats, perplexity, seed)
            points.append(
                pd.DataFrame(
                    {
                        "model": model,
                        "index": np.arange(len(labels)),
                        "label": labels,
                        "classname": [classnames[i] for i in labels],
                        "x": xy[:, 0],
                        "y": xy[:, 1],
                    }
                )
            )
        metrics.append(
            {
                "model": model,
                "images": len(labels),
                "classes": len(np.unique(labels)),
                "silhouette": silhouette(feats, labels),
                "knn_acc": knn_accuracy(feats, labels, k),
                "k": max(1, min(k, len(labels) - 1)),  # what knn_accuracy used
            }
        )
    return conform(pd.concat(points, ignore_index=True), TSNE), conform(pd.DataFrame(metrics), TSNE_METRICS)
