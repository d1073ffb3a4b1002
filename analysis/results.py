"""Run directories -> result tables over seeds (PAPER.md sections 7 and 8).

Every ``results.json`` under a root (clipfit-train runs and clipfit-eval targets) becomes one row
of RESULTS_RUNS; the tables aggregate over seeds (mean, and the sample standard deviation with
ddof = 1; 0 for a single seed):

* base-to-new, per dataset and method: Base and New mean +- std; HM = 2BN / (B + N) of the mean
  Base and mean New; hm_std = std of the per-seed HMs. The **Average** row (two or more datasets)
  takes, per method, the mean over datasets of mean Base and of mean New, and HM of those two
  (not the mean of the per-dataset HMs), as the paper's 11-dataset average does.
* few-shot: accuracy against shots per dataset, and its mean over datasets (Average) per shots.
* cross-dataset transfer and domain generalisation: clipfit-eval's target accuracies.

Zero-shot is a method of its own, taken from the ``zero_shot`` numbers every run records (in the
few-shot table it is the 0-shot point). Published numbers of ViT-B/16 (PAPER.md section 8, in
:mod:`analysis.published`) can be appended for comparison; they are averages over the paper's 11
datasets. :mod:`analysis.results_text` renders the tables as Markdown and LaTeX.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis.errors import AnalysisError
from analysis.published import (
    PUBLISHED_DATASET,
    PUBLISHED_ZERO_SHOT,
    PUBLISHED_ZERO_SHOT_SOURCE,
    published_base2new_rows,
    published_fewshot_rows,
)
from analysis.schemas import BASE2NEW, EVAL, FEWSHOT, RESULTS_RUNS, conform, shots_order, shots_text, shots_value
from clipfit.data.catalog import (  # the paper's dataset order; others follow alphabetically
    BENCHMARKS,
    IMAGENET_VARIANTS,
)
from clipfit.metrics import harmonic_mean
from clipfit.rundir import RESULTS_FILE

logger = logging.getLogger(__name__)

ZERO_SHOT = "zero-shot"
AVERAGE = "Average"


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if values.count() > 1 else 0.0


def find_results(root: str | Path) -> list[Path]:
    """Every results.json under ``root`` (sorted); a missing or empty tree is an error."""
    root = Path(root).expanduser()
    if not root.exists():
        raise AnalysisError(f"no such run tree: {root}")
    files = [root] if root.is_file() else sorted(root.rglob(RESULTS_FILE))
    if not files:
        raise AnalysisError(
            f"no {RESULTS_FILE} under {root}: point results at a folder of finished clipfit-train runs "
            "(e.g. runs/, which holds <dataset>/<setting>/<recipe>/shots<K>/seed<S>/results.json)"
        )
    return files


def _row(path: Path, root: Path, data: dict) -> dict:
    metrics, zero_shot = data.get("metrics") or {}, data.get("zero_shot") or {}
    source, versions = data.get("source") or {}, data.get("versions") or {}
    # zero-shot under the published protocol: recorded where its template differs, else the same numbers
    protocol = (data.get("zero_shot_published") or {}).get("metrics") or zero_shot
    published = (data.get("self_check") or {}).get("published") or {}
    nan = math.nan
    return {
        "path": str(path.parent.relative_to(root)) if path.is_relative_to(root) else str(path.parent),
        "dataset": data["dataset"],
        "setting": data["setting"],
        "method": data.get("recipe") or "?",
        "recipe": data.get("recipe") or "?",
        "model": data.get("model") or "?",
        "pretrained": data.get("pretrained") or "?",
        "shots": data.get("shots"),
        "seed": data.get("seed"),
        "reg_weight": data.get("reg_weight", nan),
        "source_dataset": source.get("dataset"),
        "base_acc": metrics.get("base_acc", nan),
        "new_acc": metrics.get("new_acc", nan),
        "hm": metrics.get("hm", nan),
        "acc": metrics.get("acc", nan),
        "zs_base_acc": zero_shot.get("base_acc", nan),
        "zs_new_acc": zero_shot.get("new_acc", nan),
        "zs_hm": zero_shot.get("hm", nan),
        "zs_acc": zero_shot.get("acc", nan),
        **{f"zsp_{k}": protocol.get(k, nan) for k in ("base_acc", "new_acc", "hm", "acc")},
        **{f"pub_{k}": published.get(k, nan) for k in ("base_acc", "new_acc", "hm", "acc")},
        "comparable": bool(data.get("comparable", True)),
        "precision": data.get("precision") or "?",
        "signature": data.get("signature"),  # as the run recorded it (None in hand-made records)
        "clipfit_version": versions.get("clipfit") or "?",
        "torch_version": versions.get("torch") or "?",
    }


def provenance(runs: pd.DataFrame) -> str:
    """One line on what produced ``runs``: models, shots, seeds, precision and versions (each value once)."""

    def values(*columns: str, sep: str = " ") -> str:
        seen = runs[list(columns)].astype(str).drop_duplicates().itertuples(index=False)
        return ", ".join(sep.join(row) for row in seen)

    seeds = ", ".join(str(s) for s in sorted(runs["seed"].dropna().unique()))
    shots = ", ".join(str(s) for s in sorted(runs["shots"].dropna().unique()))
    return (
        f"Model {values('model', 'pretrained', sep=' / ')}; shots {shots}; seeds {seeds}; "
        f"precision {values('precision')}; clipfit {values('clipfit_version')}, torch {values('torch_version')}."
    )


def read_runs(root: str | Path) -> pd.DataFrame:
    """The RESULTS_RUNS table: one row per results.json under ``root``.

    Files that are not run results (no dataset/setting/metrics) are skipped with a warning. A
    recipe trained with several regulariser weights in one setting gets method names "clipfit (λ=8)".
    """
    root = Path(root).expanduser()
    base = root if root.is_dir() else root.parent
    rows = []
    for path in find_results(root):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # ValueError: not JSON, or not UTF-8
            logger.warning("skipping %s: not readable JSON (%s)", path, exc)
            continue
        if (
            not isinstance(data, dict)
            or not {"dataset", "setting", "metrics"} <= set(data)
            or not all(isinstance(data.get(k) or {}, dict) for k in ("metrics", "zero_shot", "source", "versions"))
        ):
            logger.warning("skipping %s: not the results of a clipfit run", path)
            continue
        rows.append(_row(path, base, data))
    if not rows:
        raise AnalysisError(f"none of the {RESULTS_FILE} files under {root} holds clipfit run results")
    return conform(_qualify_methods(pd.DataFrame(rows)), RESULTS_RUNS)


def _qualify_methods(frame: pd.DataFrame) -> pd.DataFrame:
    """Method names that keep apart runs the tables would otherwise average together.

    A recipe gets "(λ=w)" when some dataset holds its runs with several regulariser weights at one
    shot count (an ablation; the paper's own per-dataset weights, e.g. λ=8 on DTD and 2 elsewhere,
    stay one method), and "(K shots)" in the base-to-new and transfer tables, which have no shots
    column, when some dataset holds its runs at several shot counts. Every run of that recipe and
    setting is renamed alike, so the Average rows still span the same datasets.
    """
    frame = frame.copy()
    same = ["setting", "recipe", "model", "pretrained", "dataset", "source_dataset"]
    for column, label, settings in (
        ("reg_weight", lambda w: f"λ={w:g}", None),
        ("shots", lambda k: f"{shots_text(k)} shots", ("base2new", "eval")),
    ):
        rows = frame if settings is None else frame[frame["setting"].isin(settings)]
        extra = [] if column == "shots" else ["shots"]
        varied = rows.groupby(same + extra, dropna=False)[column].nunique() > 1
        for setting, recipe in {(k[0], k[1]) for k in varied[varied].index}:
            index = frame.index[(frame["setting"] == setting) & (frame["recipe"] == recipe)]
            frame.loc[index, "method"] = [
                f"{m} ({label(v)})" if pd.notna(v) else m
                for m, v in zip(frame.loc[index, "method"], frame.loc[index, column], strict=True)
            ]
    return frame


def _dataset_key(name: str) -> tuple:
    if name in BENCHMARKS:
        return (0, BENCHMARKS.index(name), name)
    if name == AVERAGE:
        return (2, 0, name)
    if name == PUBLISHED_DATASET:
        return (3, 0, name)
    return (1, 0, name)


def _sort(frame: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    methods = list(dict.fromkeys([ZERO_SHOT, *frame["method"]]))
    keyed = frame.assign(
        _d=[_dataset_key(d) for d in frame["dataset"]],
        _m=[(s != "", methods.index(m)) for s, m in zip(frame["source"], frame["method"], strict=True)],
        **{f"_{c}": [shots_order(v) for v in frame[c]] for c in extra if c == "shots"},
    )
    order = ["_d", *(f"_{c}" if c == "shots" else c for c in extra), "_m"]
    helpers = ["_d", "_m", *(f"_{c}" for c in extra if c == "shots")]
    return keyed.sort_values(order, kind="stable").drop(columns=helpers).reset_index(drop=True)


def _zero_shot_rows(runs: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Zero-shot numbers as runs of a method "zero-shot", one per (model, pretrained, dataset, seed)."""
    zs = runs.drop_duplicates(["model", "pretrained", "dataset", "seed"]).copy()
    for target, source in columns.items():
        zs[target] = zs[source]
    zs["method"] = ZERO_SHOT
    return zs


def base2new_table(runs: pd.DataFrame, published: bool = False) -> pd.DataFrame:
    """The BASE2NEW table (see the module docstring); empty when there are no base-to-new runs."""
    b2n = runs[runs["setting"] == "base2new"]
    if b2n.empty:
        return pd.DataFrame(columns=list(BASE2NEW))
    # against published numbers, zero-shot is measured as they were (CoOp's ZeroshotCLIP templates)
    prefix = "zsp" if published else "zs"
    zs = _zero_shot_rows(b2n, {k: f"{prefix}_{k}" for k in ("base_acc", "new_acc", "hm")})
    rows = []
    for (method, model, pretrained, dataset), part in pd.concat([zs, b2n]).groupby(
        ["method", "model", "pretrained", "dataset"], sort=False
    ):
        base, new = float(part["base_acc"].mean()), float(part["new_acc"].mean())
        per_seed_hm = pd.Series([harmonic_mean(b, n) for b, n in zip(part["base_acc"], part["new_acc"], strict=True)])
        rows.append(
            {
                "method": method,
                "model": model,
                "pretrained": pretrained,
                "dataset": dataset,
                "seeds": int(part["seed"].nunique()),
                "base_mean": base,
                "base_std": _std(part["base_acc"]),
                "new_mean": new,
                "new_std": _std(part["new_acc"]),
                "hm": harmonic_mean(base, new),
                "hm_std": _std(per_seed_hm),
                "comparable": bool(part["comparable"].all()),
                "source": "",
            }
        )
    table = pd.DataFrame(rows)
    averages = []
    for (method, model, pretrained), part in table.groupby(["method", "model", "pretrained"], sort=False):
        if part["dataset"].nunique() < 2:
            continue
        base, new = float(part["base_mean"].mean()), float(part["new_mean"].mean())
        averages.append(
            {
                "method": method,
                "model": model,
                "pretrained": pretrained,
                "dataset": AVERAGE,
                "seeds": int(part["seeds"].min()),
                "base_mean": base,
                "base_std": math.nan,
                "new_mean": new,
                "new_std": math.nan,
                "hm": harmonic_mean(base, new),
                "hm_std": math.nan,
                "comparable": bool(part["comparable"].all()),
                "source": "",
            }
        )
    if published:
        averages += published_base2new_rows() + _published_zero_shot_rows(b2n, ("base_acc", "new_acc", "hm"))
    table = pd.concat([table, pd.DataFrame(averages, columns=table.columns)], ignore_index=True)
    return conform(_sort(table), BASE2NEW)


def _published_zero_shot_rows(runs: pd.DataFrame, keys: tuple[str, ...], shots: int | None = None) -> list[dict]:
    """Rows of the published zero-shot numbers of the runs' datasets (from their self-checks), beside the runs'."""
    rows = []
    known = runs.dropna(subset=[f"pub_{keys[-1]}"]).drop_duplicates(["model", "pretrained", "dataset"])
    for run in known.itertuples():
        row = {
            "method": PUBLISHED_ZERO_SHOT,
            "model": run.model,
            "pretrained": run.pretrained,
            "dataset": run.dataset,
            "seeds": 0,
            "comparable": True,
            "source": PUBLISHED_ZERO_SHOT_SOURCE,
        }
        if keys == ("acc",):
            row.update(shots=0 if shots is None else shots, acc_mean=run.pub_acc, acc_std=math.nan)
        else:
            row.update(
                base_mean=run.pub_base_acc, base_std=math.nan, new_mean=run.pub_new_acc, new_std=math.nan,
                hm=run.pub_hm, hm_std=math.nan,
            )  # fmt: skip
        rows.append(row)
    return rows


def fewshot_table(runs: pd.DataFrame, published: bool = False) -> pd.DataFrame:
    """The FEWSHOT table (see the module docstring); empty when there are no few-shot runs."""
    few = runs[runs["setting"] == "fewshot"]
    if few.empty:
        return pd.DataFrame(columns=list(FEWSHOT))
    zs = _zero_shot_rows(few, {"acc": "zsp_acc" if published else "zs_acc"}).assign(shots=0)
    rows = []
    for (method, model, pretrained, dataset, shots), part in pd.concat([zs, few]).groupby(
        ["method", "model", "pretrained", "dataset", "shots"], sort=False
    ):
        rows.append(
            {
                "method": method,
                "model": model,
                "pretrained": pretrained,
                "dataset": dataset,
                "shots": shots_value(shots),
                "seeds": int(part["seed"].nunique()),
                "acc_mean": float(part["acc"].mean()),
                "acc_std": _std(part["acc"]),
                "comparable": bool(part["comparable"].all()),
                "source": "",
            }
        )
    table = pd.DataFrame(rows)
    averages = []
    for (method, model, pretrained, shots), part in table.groupby(
        ["method", "model", "pretrained", "shots"], sort=False
    ):
        if part["dataset"].nunique() < 2:
            continue
        averages.append(
            {
                "method": method,
                "model": model,
                "pretrained": pretrained,
                "dataset": AVERAGE,
                "shots": shots_value(shots),
                "seeds": int(part["seeds"].min()),
                "acc_mean": float(part["acc_mean"].mean()),
                "acc_std": math.nan,
                "comparable": bool(part["comparable"].all()),
                "source": "",
            }
        )
    if published:
        averages += published_fewshot_rows() + _published_zero_shot_rows(few, ("acc",))
    table = pd.concat([table, pd.DataFrame(averages, columns=table.columns)], ignore_index=True)
    return conform(_sort(table, ["shots"]), FEWSHOT)


def eval_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The EVAL table: clipfit-eval targets over seeds, cross-dataset or domain generalisation."""
    ev = runs[runs["setting"] == "eval"]
    if ev.empty:
        return pd.DataFrame(columns=list(EVAL))
    rows = []
    for (method, model, pretrained, source, dataset), part in ev.groupby(
        ["method", "model", "pretrained", "source_dataset", "dataset"], sort=False, dropna=False
    ):
        rows.append(
            {
                "kind": "domain generalisation" if dataset in IMAGENET_VARIANTS else "cross-dataset",
                "method": method,
                "model": model,
                "pretrained": pretrained,
                "source_dataset": source,
                "dataset": dataset,
                "seeds": int(part["seed"].nunique()),
                "acc_mean": float(part["acc"].mean()),
                "acc_std": _std(part["acc"]),
                "zero_shot_mean": float(part["zs_acc"].mean()),
                "comparable": bool(part["comparable"].all()),
                "source": "",
            }
        )
    table = pd.DataFrame(rows)
    table = table.assign(_k=table["kind"]).sort_values(["_k"], kind="stable").drop(columns="_k")
    return conform(_sort(table, ["kind"]), EVAL)


def summary(runs: pd.DataFrame) -> dict:
    """Counts for the sidecar: runs per setting, datasets, methods, seeds."""
    return {
        "runs": len(runs),
        "settings": {k: int(v) for k, v in runs["setting"].value_counts().items()},
        "datasets": sorted(runs["dataset"].unique().tolist()),
        "methods": sorted(runs["method"].unique().tolist()),
        "seeds": sorted(int(s) for s in runs["seed"].dropna().unique()),
    }
