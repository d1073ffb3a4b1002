"""Trainable-parameter recipes: records of what trains, how, with which head and defaults.

A recipe maps a model to the exact set of parameter names to train. Each of its rules names a
tower and a structural criterion from :mod:`clipfit.towers` ("the bias of the last Linear of every
text MLP block", "every LayerNorm of the image tower"); a rule that matches nothing raises, naming
the tower and the rule, instead of silently training less (the released ClipFit code selects
nothing on a ResNet image tower and does not notice).

Beside its rules a recipe declares its head (how features are computed, :mod:`clipfit.heads`), its
training method (gradient fine-tuning, none, or a scikit-learn fit: :mod:`clipfit.methods`) and
where its published settings differ from ClipFit's (the literature's baselines train with
cross-entropy alone: add the regulariser with --reg-weight; full fine-tuning of all weights with
SGD needs a learning rate far below 0.002: measured on the shapes world, 0.002 overfits the base
classes and loses New, 1e-4 does not). Adding a recipe on existing tensors is one record here.

The records load without torch (``clipfit-train --help`` lists them): a rule names its selector in
:mod:`clipfit.towers` (or the head module type in :mod:`clipfit.heads.parts`), imported when a model is
selected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from clipfit.errors import ClipfitError
from clipfit.heads import AdapterHead, ClipHead, CoCoOpHead, CoOpHead, MaPLeHead, ProbeHead

if TYPE_CHECKING:
    from torch import nn


class RecipeError(ClipfitError, ValueError):
    """A recipe cannot be applied to a model (unknown name or a rule with no match)."""


# Towers whose rules change the class text features: only they can be held near t0 by the regulariser.
TEXT_SIDE = ("text", "prompt", "model")


@dataclass(frozen=True)
class Rule:
    """One structural selection criterion inside one tower."""

    tower: str  # "image", "text", "prompt", "adapter", "probe", or "model" for whole-model rules
    description: str  # what the rule selects, in words
    select: Callable[[nn.Module], list[str]]  # model -> parameter names


@dataclass(frozen=True)
class Recipe:
    """A named set of rules (the union of their matches trains), with its head, method and defaults."""

    name: str
    description: str
    rules: tuple[Rule, ...]
    head: type[ClipHead] = ClipHead  # how features are computed (clipfit.heads)
    method: str = "finetune"  # how it trains: finetune (SGD), zero-shot (no training), linear-probe (scikit-learn)
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # OptimConfig values
    head_defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # head options

    @property
    def changes_text(self) -> bool:
        """Whether training can move the class text features (what the regulariser acts on)."""
        return any(rule.tower in TEXT_SIDE for rule in self.rules)

    def make_head(self, options: Mapping[str, Any] | None = None) -> ClipHead:
        """The recipe's head with the run's option values (the recipe's, then the head's defaults for the rest)."""
        return self.head.from_options(
            {**self.head_defaults, **{k: v for k, v in (options or {}).items() if v is not None}}
        )


def _tower(selector: str) -> Callable[[nn.Module], list[str]]:
    """The structural selector ``clipfit.towers.<selector>`` (imported on use: the records load without torch)."""

    def select(model: nn.Module) -> list[str]:
        from clipfit import towers

        return getattr(towers, selector)(model)

    select.__name__ = selector
    return select


def _of_type(kind: str, what: str) -> Callable[[nn.Module], list[str]]:
    """The parameters of the head's modules of type ``clipfit.heads.parts.<kind>``."""

    def select_head_modules(model: nn.Module) -> list[str]:
        from clipfit import towers
        from clipfit.heads import parts

        found = towers.parameters_of_type(model, getattr(parts, kind))
        if not found:
            raise RecipeError(f"the model has no {what}; the recipe's head attaches it before selection")
        return found

    return select_head_modules


_TEXT_FFN_OUT = Rule("text", "bias of the output Linear of every feed-forward block", _tower("text_ffn_output_biases"))
_IMAGE_LN = Rule("image", "weight and bias of every LayerNorm", _tower("image_layernorms"))
_NO_REGULARISER = MappingProxyType({"reg_weight": 0.0})

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("clipfit", "ClipFit: text FFN output biases + image LayerNorms", (_TEXT_FFN_OUT, _IMAGE_LN)),
        Recipe("clipfit-text", "ablation: text FFN output biases only", (_TEXT_FFN_OUT,)),
        Recipe("clipfit-image", "ablation: image LayerNorms only", (_IMAGE_LN,)),
        Recipe(
            "clipfit-fc",
            "ablation: both FFN biases of the text blocks + image LayerNorms",
            (Rule("text", "biases of both Linears of every feed-forward block", _tower("text_ffn_biases")), _IMAGE_LN),
        ),
        Recipe(
            "bitfit",
            "BitFit: every bias of both towers",
            (Rule("image", "every bias", _tower("image_biases")), Rule("text", "every bias", _tower("text_biases"))),
            defaults=_NO_REGULARISER,
        ),
        Recipe(
            "ln-tuning",
            "every LayerNorm of both towers",
            (_IMAGE_LN, Rule("text", "weight and bias of every LayerNorm", _tower("text_layernorms"))),
            defaults=_NO_REGULARISER,
        ),
        Recipe(
            "full",
            "full fine-tuning: every parameter except the logit scale",
            (Rule("model", "every parameter except logit_scale/logit_bias", _tower("all_but_logit_scale")),),
            defaults=MappingProxyType({"reg_weight": 0.0, "lr": 1e-4}),
        ),
        Recipe(
            "coop",
            "CoOp prompt tuning: learnable context vectors shared by all classes",
            (Rule("prompt", "the context vectors", _of_type("PromptContext", "prompt context (CoOp)")),),
            head=CoOpHead,
            defaults=_NO_REGULARISER,
        ),
        Recipe(
            "clip-adapter",
            "CLIP-Adapter: a residual bottleneck MLP on the image features",
            (Rule("adapter", "the adapter's layers", _of_type("Adapter", "image adapter (CLIP-Adapter)")),),
            head=AdapterHead,
            defaults=_NO_REGULARISER,
        ),
        Recipe(
            "cocoop",
            "CoCoOp: CoOp's context plus a meta-network that shifts it per image",
            (Rule("prompt", "the context vectors and the meta-network", _of_type("CoCoOpPrompts", "CoCoOp prompts")),),
            head=CoCoOpHead,
            # the published settings (vit_b16_c4_ep10_batch1_ctxv1); the original trains in fp16
            defaults=MappingProxyType({"reg_weight": 0.0, "lr": 0.002, "epochs": 10, "batch_size": 1}),
            head_defaults=MappingProxyType({"coop_init": "a photo of a"}),
        ),
        Recipe(
            "kgcoop",
            "KgCoOp: CoOp with its class text features held near the hand-crafted prompt's",
            (Rule("prompt", "the context vectors", _of_type("PromptContext", "prompt context (CoOp)")),),
            head=CoOpHead,
            # the published settings (vit_b16_ep100_ctxv1, W = 8); the released code's term is 1 - mean cos
            # to the hand-crafted prompt's features, ClipFit's regulariser (the paper writes ||w - w_clip||^2,
            # which is 2 (1 - cos) for normalised features)
            defaults=MappingProxyType({"reg_weight": 8.0, "lr": 0.002, "batch_size": 128}),
            head_defaults=MappingProxyType({"coop_init": "a photo of a"}),
        ),
        Recipe(
            "maple",
            "MaPLe: coupled prompts in the first J blocks of both towers",
            (Rule("prompt", "the prompts and coupling functions", _of_type("MaPLePrompts", "MaPLe prompts")),),
            head=MaPLeHead,
            # the published settings (vit_b16_c2_ep5_batch4_2ctx)
            defaults=MappingProxyType({"reg_weight": 0.0, "lr": 0.0035, "epochs": 5, "batch_size": 4}),
        ),
        Recipe("zero-shot", "zero-shot CLIP: no training, evaluation only", (), method="zero-shot"),
        Recipe(
            "linear-probe",
            "linear probe (CoOp's protocol): logistic regression on frozen L2-normalised image features",
            (
                Rule(
                    "probe",
                    "the probe's weight and bias (fit by scikit-learn)",
                    _of_type("LinearProbe", "linear probe"),
                ),
            ),
            head=ProbeHead,
            method="linear-probe",
            defaults=_NO_REGULARISER,
        ),
    )
}


def get_recipe(name: str) -> Recipe:
    """Look a recipe up by name; unknown names list the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise RecipeError(f"unknown recipe '{name}'; known recipes: {', '.join(RECIPES)}") from None


def head_options() -> dict[str, Any]:
    """Every head option of every recipe, by name (the ``clipfit-train`` flags of the heads)."""
    return {f.name: f for recipe in RECIPES.values() for f in recipe.head.options()}


def select(model: nn.Module, recipe: Recipe | str) -> list[str]:
    """Names of the parameters ``recipe`` trains, in the model's parameter order.

    Raises:
        RecipeError: a rule matches nothing (e.g. LayerNorms of a ResNet image tower), or the
            model lacks the structure a rule reads.
    """
    from clipfit import towers

    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    chosen: set[str] = set()
    for rule in recipe.rules:
        try:
            matched = rule.select(model)
        except towers.TowerError as exc:
            raise RecipeError(f"recipe '{recipe.name}': {exc}") from None
        if not matched:
            tower = type(towers.image_tower(model)).__name__ if rule.tower == "image" else rule.tower
            raise RecipeError(
                f"recipe '{recipe.name}' selects no parameters in the {rule.tower} tower ({tower}): "
                f"rule '{rule.description}' matched nothing. "
                + (
                    "A ResNet image tower has BatchNorm, not LayerNorm; use a ViT architecture "
                    "or the 'clipfit-text' recipe."
                    if rule.tower == "image"
                    else "Use an open_clip architecture with a transformer text tower."
                )
            )
        chosen.update(matched)
    return [n for n, _ in model.named_parameters() if n in chosen]


def apply_recipe(model: nn.Module, recipe: Recipe | str) -> list[str]:
    """Set ``requires_grad`` on every parameter: True exactly for the recipe's. Idempotent.

    Returns:
        The trained parameter names, in model order.
    """
    names = set(select(model, recipe))
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)
    return [n for n, _ in model.named_parameters() if n in names]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, all) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def summary_line(trainable: int, total: int) -> str:
    """The standard line: ``trainable params: 46,080 || all params: 149,620,737 || trainable%: 0.0308``."""
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"


def describe_selection(model: nn.Module, recipe: Recipe | str) -> str:
    """What each rule of the recipe matched (tensors and values), printed by ``clipfit-train --dry-run``."""
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    params = dict(model.named_parameters())
    lines = [f"recipe {recipe.name}: {recipe.description}"]
    for rule in recipe.rules:
        matched = rule.select(model)
        numel = sum(params[n].numel() for n in matched)
        lines.append(f"  [{rule.tower}] {rule.description}: {len(matched)} tensors, {numel:,d} values")
    return "\n".join(lines)
