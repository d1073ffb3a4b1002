"""Runs of one configuration (seeds) and their labels; the mean and spread over seeds.

A *configuration* is everything a run's result depends on except its seed: the model and its
pretrained weights, the recipe (and its head options), the dataset, setting and shots, the
optimiser (learning rate, epochs, batch size, lambda, ...) and the precision. Settings that never
change a result (device, workers, logging, checkpointing; :data:`clipfit.rundir.RESULT_NEUTRAL`)
and the data root do not count. Runs that share a configuration differ only in their seed; the
comparative analyses aggregate them:

    mean = (1/n) sum_r x_r,   std = sqrt(sum_r (x_r - mean)^2 / (n - 1))   (sample std; NaN for n = 1)

and draw different configurations side by side. A configuration's label names only what differs
between the configurations compared (``clipfit λ=8``, ``clipfit λ=0``, ``ln-tuning``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# settings that are not part of a configuration (besides clipfit.rundir.RESULT_NEUTRAL)
NOT_CONFIGURATION = {("seed",), ("data", "data_root"), ("data", "num_workers"), ("max_eval_images",)}
# how a differing setting is written in a label, by its last key (value -> text)
_LABEL = {
    "recipe": lambda v: f"{v}",
    "reg_weight": lambda v: f"λ={v:g}" if isinstance(v, int | float) else f"λ={v}",
    "shots": lambda v: f"{v} shots",
    "epochs": lambda v: f"{v} ep",
    "lr": lambda v: f"lr {v:g}" if isinstance(v, int | float) else f"lr {v}",
    "name": lambda v: f"{v}",
    "pretrained": lambda v: f"{v}",
    "dataset": lambda v: f"{v}",
    "file": lambda v: Path(str(v)).name,
}
# the order in which differing settings appear in a label
_FIRST = ("recipe", "reg_weight", "name", "pretrained", "dataset", "shots", "epochs", "lr")


def configuration_key(settings: Mapping[tuple[str, ...], Any], neutral: set[tuple[str, ...]]) -> tuple:
    """The hashable configuration of one run's flattened settings (seed and ``neutral`` settings left out)."""
    return tuple(sorted((k, repr(v)) for k, v in settings.items() if k not in neutral | NOT_CONFIGURATION))


def _describe(key: tuple[str, ...], value: Any) -> str:
    name = key[-1]
    return _LABEL[name](value) if name in _LABEL else f"{'.'.join(key)}={value}"


def configuration_labels(
    settings: Sequence[Mapping[tuple[str, ...], Any]], neutral: set[tuple[str, ...]] = frozenset()
) -> list[str]:
    """One label per run; runs of one configuration share theirs.

    The label names the settings whose values differ between the configurations (recipe first, then
    λ, model, weights, dataset, shots, epochs, then any other), e.g. ``clipfit λ=8`` / ``clipfit λ=0``.
    With one configuration it is the recipe (or ``run``).
    """
    keys = [configuration_key(s, neutral) for s in settings]
    distinct = list(dict.fromkeys(keys))
    first = {key: settings[keys.index(key)] for key in distinct}
    if len(distinct) == 1:
        only = settings[0]
        return [str(only.get(("recipe",), "run"))] * len(settings)
    paths = [p for p in dict.fromkeys(p for s in first.values() for p in s) if p not in neutral | NOT_CONFIGURATION]
    differing = [p for p in paths if len({repr(s.get(p)) for s in first.values()}) > 1]
    differing.sort(key=lambda p: (_FIRST.index(p[-1]) if p[-1] in _FIRST else len(_FIRST), p))
    if ("recipe",) in paths and ("recipe",) not in differing:
        differing.insert(0, ("recipe",))  # the recipe always leads, so a label reads as what was trained
    # only the settings that tell configurations apart beyond the ones before them (a recipe's own lr is implied)
    kept: list[tuple[str, ...]] = []
    for path in differing:
        before = len({tuple(repr(first[k].get(p)) for p in kept) for k in distinct})
        after = len({tuple(repr(first[k].get(p)) for p in [*kept, path]) for k in distinct})
        if after > before or path == ("recipe",):
            kept.append(path)
    names = {key: " ".join(_describe(p, first[key].get(p)) for p in kept) for key in distinct}
    if len(set(names.values())) < len(names):  # two configurations only a hidden setting tells apart
        names = {key: f"{name} #{i + 1}" for i, (key, name) in enumerate(names.items())}
    return [names[key] for key in keys]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for one value) of finite ``values``; (NaN, NaN) for none."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if len(arr) == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")


def over_runs(frame: pd.DataFrame, keys: Sequence[str], values: Sequence[str], run: str = "checkpoint") -> pd.DataFrame:
    """Mean and sample std of each of ``values`` over the runs of each ``keys`` group, in first-seen order.

    Adds ``runs`` (how many distinct ``run`` values the group holds) and ``<value>_mean``/``<value>_std``.
    """
    rows = []
    for group, part in frame.groupby(list(keys), sort=False, dropna=False):
        group = group if isinstance(group, tuple) else (group,)
        row = dict(zip(keys, group, strict=True))
        row["runs"] = int(part[run].nunique())
        for value in values:
            row[f"{value}_mean"], row[f"{value}_std"] = mean_std(part[value].tolist())
        rows.append(row)
    return pd.DataFrame(rows)


def differing_only(
    settings: Sequence[Mapping[tuple[str, ...], Any]], key: tuple[str, ...], neutral: set[tuple[str, ...]] = frozenset()
) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of runs whose configurations differ in ``key`` and in nothing else (seed aside)
    — e.g. λ = 8 against λ = 0 with everything else equal (paper Fig. 4 right). One pair per two configurations."""
    pairs, seen = [], set()
    for i, a in enumerate(settings):
        for j in range(i + 1, len(settings)):
            b = settings[j]
            if a.get(key) == b.get(key):
                continue
            rest_a = configuration_key({k: v for k, v in a.items() if k != key}, neutral)
            rest_b = configuration_key({k: v for k, v in b.items() if k != key}, neutral)
            pair = (repr(a.get(key)), repr(b.get(key)))
            if rest_a == rest_b and (rest_a, pair) not in seen:
                seen.add((rest_a, pair))
                pairs.append((i, j))
    return pairs
