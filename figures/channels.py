"""Within the most-changed tensors: how concentrated the change is over channels, and the channels that moved most.

Reads CHANNELS and CHANNEL_CONCENTRATION of :mod:`analysis.schemas`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from figures.style import PAGE_WIDTH, PALETTE, colours, new_figure, require, styled

CURVES = 6  # tensors drawn as concentration curves
TOP = 12  # channels named


def first_runs(concentration: pd.DataFrame) -> dict[str, str]:
    """configuration -> its first checkpoint, in first-seen order."""
    first = concentration.drop_duplicates("configuration")
    return dict(zip(first["configuration"], first["checkpoint"], strict=True))


def tensor_name(row) -> str:
    """``image ln_pre.bias``, ``text 0.mlp.c_proj.bias``, ``image class_embedding``."""
    kind = "" if row["kind"] == "param" else f".{row['kind']}"
    return f"{row['tower']} {row['position']}{kind}"


def channel_name(row) -> str:
    """``image ln_pre.bias [12]``."""
    return f"{tensor_name(row)} [{int(row['channel'])}]"


def draw_channels(channels: pd.DataFrame, concentration: pd.DataFrame) -> Figure:
    """Per configuration (its first run): the cumulative share of each most-changed tensor's change against the
    share of its channels (largest first), and the channels that moved most (signed change)."""
    require(channels, "channels")
    require(concentration, "channel_concentration")
    runs = first_runs(concentration)
    with styled():
        fig = new_figure(PAGE_WIDTH, 3.7 * len(runs) + 0.4)
        axes = fig.subplots(len(runs), 2, squeeze=False, width_ratios=[1, 1.3])
        for (left, right), (config, checkpoint) in zip(axes, runs.items(), strict=True):
            own = channels[channels["checkpoint"] == checkpoint]
            summary = concentration[concentration["checkpoint"] == checkpoint].sort_values("sq_change", ascending=False)
            names = [n for n in summary["name"] if n in set(own["name"])][:CURVES]
            for name, colour in zip(names, colours(len(names)), strict=True):
                values = np.sort(own.loc[own["name"] == name, "sq_change"].to_numpy())[::-1]
                if values.sum() <= 0:
                    continue
                row = summary[summary["name"] == name].iloc[0]
                x = np.arange(1, len(values) + 1) / len(values)
                left.plot(
                    np.r_[0, x],
                    np.r_[0, np.cumsum(values) / values.sum()],
                    color=colour,
                    label=f"{tensor_name(row)} (Gini {row['gini']:.2f})",
                )
            left.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=0.8)
            left.axvline(0.1, color="#bbb", linewidth=0.6)
            left.set_xlabel("share of the tensor's channels (largest change first)")
            left.set_ylabel("share of its squared change")
            left.set_title(f"{config}: the most-changed tensors")
            left.legend(loc="lower right")
            top = own.sort_values("sq_change", ascending=False, kind="stable").head(TOP)
            right.barh(
                range(len(top)),
                top["change"],
                color=[PALETTE[0] if t == "image" else PALETTE[1] for t in top["tower"]],
            )
            right.set_yticks(range(len(top)), [channel_name(r) for _, r in top.iterrows()])
            right.invert_yaxis()
            right.axvline(0, color="#444", linewidth=0.8)
            right.set_xlabel("change θ − θ₀ of the channel")
            right.set_title(f"the {len(top)} channels that moved most ({checkpoint})")
        fig.suptitle("Where inside the tensors the change sits: channels")
    return fig


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.0f}%"


def caption_channels(channels: pd.DataFrame, concentration: pd.DataFrame) -> str:
    """Per configuration: how concentrated its most-changed tensor is, the median over its 1-D tensors, the top
    channels named, and whether seeds agree on the top channel."""
    parts = []
    for config, checkpoint in first_runs(concentration).items():
        own = concentration[concentration["checkpoint"] == checkpoint]
        top = own.loc[own["sq_change"].idxmax()]
        n = int(top["channels"])
        k1, k10 = max(1, int(np.ceil(0.01 * n))), max(1, int(np.ceil(0.1 * n)))
        sentence = (
            f"{config}: in {tensor_name(top)} (the most-changed of {len(own)} 1-D tensors) the top 1% of "
            f"channels ({k1} of {n}) carry {_pct(top['top1_share'])} of the squared change and the top 10% ({k10}) "
            f"{_pct(top['top10_share'])} (Gini {top['gini']:.2f}; median over the tensors: top 10% "
            f"{_pct(own['top10_share'].median())}, Gini {own['gini'].median():.2f})"
        )
        named = channels[channels["checkpoint"] == checkpoint].sort_values("sq_change", ascending=False).head(3)
        if not named.empty:
            sentence += "; largest: " + ", ".join(f"{channel_name(r)} {r['change']:+.3g}" for _, r in named.iterrows())
        seeds = concentration[(concentration["configuration"] == config) & (concentration["name"] == top["name"])]
        if seeds["checkpoint"].nunique() > 1:
            same = int((seeds["top_channel"] == top["top_channel"]).sum())
            sentence += f"; the same top channel [{int(top['top_channel'])}] in {same} of {len(seeds)} seeds"
        parts.append(sentence)
    return "Per-channel change of the 1-D tensors (LayerNorm gains and biases, biases). " + "; ".join(parts) + "."


def finding_channels(concentration: pd.DataFrame) -> str:
    """The headline: how concentrated the first run's most-changed tensor is."""
    checkpoint = concentration["checkpoint"].iloc[0]
    own = concentration[concentration["checkpoint"] == checkpoint]
    top = own.loc[own["sq_change"].idxmax()]
    return (
        f"Channels ({checkpoint}): in {tensor_name(top)}, the most-changed tensor, the top 1% of channels carry "
        f"{_pct(top['top1_share'])} and the top 10% {_pct(top['top10_share'])} of the squared change (Gini "
        f"{top['gini']:.2f}); its largest: channel {int(top['top_channel'])} ({top['top_change']:+.3g})."
    )
