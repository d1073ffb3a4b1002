"""The one definition of "layer": parameter name -> (tower, stage, block, module, kind).

Training logs (layers.jsonl), the analysis tables and the figure axes all go through
:func:`describe`, so a tensor is called and ordered the same way everywhere. The table below
covers open_clip's CLIP and CustomTextCLIP naming plus the extra modules of clipfit's baselines.

Examples::

    visual.ln_pre.weight                      -> image, stage 0, block None, module "ln_pre",     kind "weight"
    visual.transformer.resblocks.3.ln_2.bias  -> image, stage 1, block 3,    module "ln_2",       kind "bias"
    transformer.resblocks.0.mlp.c_proj.bias   -> text,  stage 1, block 0,    module "mlp.c_proj", kind "bias"
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

TOWERS = ("image", "text", "shared", "prompt", "adapter", "probe")

# (tower, stage, pattern). Stage 0 = before the transformer blocks, 1 = inside them, 2 = after.
# Named groups: block (optional), module, kind (optional: a bare nn.Parameter has kind "param").
_RULES: tuple[tuple[str, int, re.Pattern[str]], ...] = tuple(
    (tower, stage, re.compile(pattern))
    for tower, stage, pattern in (
        ("image", 1, r"^visual\.transformer\.resblocks\.(?P<block>\d+)\.(?P<module>.+)\.(?P<kind>[^.]+)$"),
        ("image", 0, r"^visual\.(?P<module>conv1|class_embedding|positional_embedding|ln_pre)(\.(?P<kind>[^.]+))?$"),
        ("image", 2, r"^visual\.(?P<module>ln_post|proj|attn_pool\w*)(\.(?P<kind>[^.]+))?$"),
        ("image", 1, r"^visual\.(?P<module>.+)\.(?P<kind>[^.]+)$"),  # other image towers (ResNet, timm)
        ("text", 1, r"^(?:text\.)?transformer\.resblocks\.(?P<block>\d+)\.(?P<module>.+)\.(?P<kind>[^.]+)$"),
        ("text", 0, r"^(?:text\.)?(?P<module>token_embedding|positional_embedding|cls_emb)(\.(?P<kind>[^.]+))?$"),
        ("text", 2, r"^(?:text\.)?(?P<module>ln_final|text_projection)(\.(?P<kind>[^.]+))?$"),
        ("text", 1, r"^text\.(?P<module>.+)\.(?P<kind>[^.]+)$"),  # other text towers (Hugging Face)
        ("shared", 2, r"^(?P<module>logit_scale|logit_bias)$"),
        # MaPLe's per-block prompts and coupling functions: the block they reach is in the name
        ("prompt", 1, r"^prompt\.(?P<module>deep_text|deep_proj)\.(?P<block>\d+)(\.(?P<kind>[^.]+))?$"),
        ("prompt", 0, r"^prompt\.(?P<module>[^.]+)$"),
        ("prompt", 0, r"^prompt\.(?P<module>.+)\.(?P<kind>[^.]+)$"),  # CoCoOp's meta-net, MaPLe's proj
        ("adapter", 2, r"^adapter\.(?P<module>.+)\.(?P<kind>[^.]+)$"),
        ("probe", 2, r"^(?P<module>probe)\.(?P<kind>[^.]+)$"),
    )
)

# Order of modules along the forward pass, inside a block and around the blocks.
_MODULE_ORDER = {
    name: i
    for i, name in enumerate(
        (
            "conv1",
            "class_embedding",
            "token_embedding",
            "positional_embedding",
            "cls_emb",
            "ln_pre",
            "ctx",
            "ln_1",
            "attn",
            "ln_attn",
            "ls_1",
            "ln_2",
            "mlp.c_fc",
            "mlp.ln",
            "mlp.c_proj",
            "ls_2",
            "ln_post",
            "ln_final",
            "proj",
            "text_projection",
            "logit_scale",
            "logit_bias",
        )
    )
}


@dataclass(frozen=True)
class Layer:
    """Where one parameter tensor sits in the model."""

    name: str  # full parameter name
    tower: str  # one of TOWERS
    stage: int  # 0 before the blocks, 1 in a block, 2 after
    block: int | None  # transformer block index, None outside the blocks
    module: str  # module path inside the block (or the tower): "ln_1", "mlp.c_proj", "ln_pre"
    kind: str  # leaf name: "weight", "bias", "in_proj_weight"; "param" for bare parameters

    @property
    def family(self) -> str:
        """Coarse module family: LN, FFN-in, FFN-out, attn, embedding, projection, ..."""
        leaf = self.module.split(".")[-1]
        if leaf.startswith("ln") or "norm" in leaf or leaf.startswith("bn"):
            return "LN" if not leaf.startswith("bn") else "BN"
        if self.module.endswith("c_fc"):
            return "FFN-in"
        if self.module.endswith("c_proj") and self.module.startswith("mlp"):
            return "FFN-out"
        if self.module.startswith("attn"):
            return "attn"
        if "embedding" in leaf or leaf in ("class_embedding", "cls_emb"):
            return "embedding"
        if leaf in ("proj", "text_projection"):
            return "projection"
        return leaf

    @property
    def group(self) -> str:
        """The paper's grouping: e.g. "text FFN-out bias", "image LN weight", "image LN bias"."""
        return f"{self.tower} {self.family} {self.kind}"

    @property
    def label(self) -> str:
        """Short position label for figure axes: "ln_pre", "3.ln_1", "0.mlp.c_proj"."""
        return self.module if self.block is None else f"{self.block}.{self.module}"

    def columns(self) -> dict:
        """The tidy-table columns of this tensor (layers.jsonl and clipfit-analyze's LAYER columns)."""
        return {
            "name": self.name,
            "tower": self.tower,
            "group": self.group,
            "block": self.block,
            "module": self.module,
            "kind": self.kind,
        }

    @property
    def sort_key(self) -> tuple:
        tower = TOWERS.index(self.tower) if self.tower in TOWERS else len(TOWERS)
        block = -1 if self.block is None else self.block
        return (tower, self.stage, block, _MODULE_ORDER.get(self.module, len(_MODULE_ORDER)), self.module, self.kind)


def describe(name: str) -> Layer:
    """Locate a parameter by its open_clip name (see the module docstring)."""
    for tower, stage, pattern in _RULES:
        match = pattern.match(name)
        if match:
            groups = match.groupdict()
            block = groups.get("block")
            return Layer(
                name=name,
                tower=tower,
                stage=stage,
                block=int(block) if block is not None else None,
                module=groups["module"],
                kind=groups.get("kind") or "param",
            )
    return Layer(name=name, tower="shared", stage=2, block=None, module=name, kind="param")


def ordered(names: Iterable[str]) -> list[Layer]:
    """Layers of ``names`` in forward order: image tower, text tower, then the rest."""
    return sorted((describe(n) for n in names), key=lambda layer: layer.sort_key)
