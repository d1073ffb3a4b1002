"""A run tree against the published numbers: the zero-shot self-check per dataset, and the paper's averages.

The self-check compares each dataset's zero-shot accuracy under the published protocol (CoOp's
ZeroshotCLIP templates) with the published number of the runs' model (recorded by every run, see
:mod:`clipfit.reference`); a difference of more than a point means the network, template,
preprocessing, split or weights differ from the published setting. The paper comparison sets the
measured average over datasets of zero-shot, ClipFit and CoOp (HM of the mean Base and mean New, as
the paper averages) beside the paper's averages over its 11 datasets, and ClipFit's HM gain over
zero-shot beside the paper's +7.27 (PAPER.md section 8).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from analysis.published import PUBLISHED_DATASET
from analysis.results import AVERAGE, ZERO_SHOT
from analysis.schemas import PAPER_COMPARISON, SELF_CHECK, conform

# measured method -> the published row it is compared with (analysis.published.PUBLISHED_BASE2NEW)
PAPER_METHODS = {
    ZERO_SHOT: "zero-shot CLIP",
    "clipfit": "CLIPFit (paper)",
    "coop": "CoOp",
    "cocoop": "CoCoOp",
    "kgcoop": "KgCoOp",
    "maple": "MaPLe",
}
GAIN = "clipfit − zero-shot"


def self_check_table(runs: pd.DataFrame, tolerance: float = 1.0) -> pd.DataFrame:
    """The SELF_CHECK table: each dataset's zero-shot (published protocol, mean over runs) against the published
    number of the runs' model; empty when no run's model has published numbers."""
    rows = []
    for metric in ("base_acc", "new_acc", "hm", "acc"):
        known = runs.dropna(subset=[f"pub_{metric}", f"zsp_{metric}"])
        for (model, pretrained, dataset, setting), part in known.groupby(
            ["model", "pretrained", "dataset", "setting"], sort=False
        ):
            published, measured = float(part[f"pub_{metric}"].iloc[0]), float(part[f"zsp_{metric}"].mean())
            rows.append(
                {
                    "model": model,
                    "pretrained": pretrained,
                    "dataset": dataset,
                    "setting": setting,
                    "metric": metric,
                    "published": published,
                    "measured": measured,
                    "difference": measured - published,
                    "within_tolerance": abs(measured - published) <= tolerance,
                }
            )
    return conform(pd.DataFrame(rows, columns=list(SELF_CHECK)), SELF_CHECK)


def paper_table(base2new: pd.DataFrame, recipes: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The PAPER_COMPARISON table: the measured Average rows of a BASE2NEW table (built with ``published``)
    against the paper's averages over its 11 datasets, and ClipFit's HM gain over zero-shot against +7.27.

    ``recipes`` maps a method name that is not a recipe's (a configuration label such as "clipfit λ=8") to the
    recipe it trained, which picks the published row; the gain row needs exactly one method of the clipfit recipe.
    """
    recipes = recipes or {}
    published = base2new[base2new["dataset"] == PUBLISHED_DATASET].set_index("method")
    measured = base2new[(base2new["dataset"] == AVERAGE) & (base2new["source"] == "")]
    datasets = base2new[(base2new["source"] == "") & ~base2new["dataset"].isin([AVERAGE, PUBLISHED_DATASET])]
    rows = []
    for row in measured.itertuples():
        name = PAPER_METHODS.get(recipes.get(row.method, row.method))
        if name is None or name not in published.index:
            continue
        paper = published.loc[name]
        count = datasets.loc[(datasets["method"] == row.method) & (datasets["model"] == row.model), "dataset"]
        rows.append(
            {
                "method": row.method,
                "published_method": name,
                "datasets": int(count.nunique()),
                "base": row.base_mean,
                "new": row.new_mean,
                "hm": row.hm,
                "published_base": paper["base_mean"],
                "published_new": paper["new_mean"],
                "published_hm": paper["hm"],
                "hm_difference": row.hm - paper["hm"],
            }
        )
    table = pd.DataFrame(rows, columns=list(PAPER_COMPARISON))
    by_method = table.set_index("method")
    clipfit = [m for m in by_method.index if recipes.get(m, m) == "clipfit"]
    if ZERO_SHOT in by_method.index and len(clipfit) == 1:
        method = clipfit[0]
        gain = by_method.loc[method, "hm"] - by_method.loc[ZERO_SHOT, "hm"]
        paper_gain = by_method.loc[method, "published_hm"] - by_method.loc[ZERO_SHOT, "published_hm"]
        nan = math.nan
        table.loc[len(table)] = {
            "method": GAIN if method == "clipfit" else f"{method} − zero-shot",
            "published_method": "CLIPFit − zero-shot CLIP",
            "datasets": by_method.loc[method, "datasets"],
            **{"base": nan, "new": nan, "published_base": nan, "published_new": nan},
            "hm": gain,
            "published_hm": paper_gain,
            "hm_difference": gain - paper_gain,
        }
    return conform(table, PAPER_COMPARISON)
