"""Trainable-parameter recipes, selected by module structure, never by name substrings.

A recipe maps a model to the exact set of parameter names to train. Each of its rules names a
tower and a structural criterion ("the bias of the last Linear of every text MLP block", "every
LayerNorm of the image tower"); a rule that matches nothing raises, naming the tower and the rule,
instead of silently training less (the released ClipFit code selects nothing on a ResNet image
tower and does not notice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torch import nn

from clipfit.errors import ClipfitError
from clipfit.heads import Adapter, LinearProbe, PromptContext
from clipfit.text import text_module


class RecipeError(ClipfitError, ValueError):
    """A recipe cannot be applied to a model (unknown name or a rule with no match)."""


@dataclass(frozen=True)
class Rule:
    """One structural selection criterion inside one tower."""

    tower: str  # "image" or "text" (or "model" for whole-model rules)
    description: str  # what the rule selects, in words
    select: Callable[[nn.Module], list[str]]  # model -> parameter names


@dataclass(frozen=True)
class Recipe:
    """A named set of rules; the union of their matches is what trains."""

    name: str
    description: str
    rules: tuple[Rule, ...]
    head: str = "clip"  # how features are computed: clip, coop (prompt context) or adapter (clipfit.heads)
    kind: str = "finetune"  # finetune (gradient training), zero-shot (none) or linear-probe (scikit-learn)


# ----------------------------------------------------------------------------- structure helpers


def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(module): name for name, module in model.named_modules()}


def _param_names(model: nn.Module, module: nn.Module, leaves: tuple[str, ...] | None = None) -> list[str]:
    """Full names of ``module``'s own parameters (optionally only the given leaf names)."""
    prefix = _module_names(model)[id(module)]
    return [
        f"{prefix}.{leaf}" if prefix else leaf
        for leaf, p in module.named_parameters(recurse=False)
        if p is not None and (leaves is None or leaf in leaves)
    ]


def image_tower(model: nn.Module) -> nn.Module:
    """The image encoder (``model.visual`` in open_clip)."""
    visual = getattr(model, "visual", None)
    if visual is None:
        raise RecipeError(f"{type(model).__name__} has no image tower (`visual`)")
    return visual


def text_blocks(model: nn.Module) -> list[nn.Module]:
    """The residual blocks of the text transformer, in order."""
    module = text_module(model)
    blocks = getattr(getattr(module, "transformer", None), "resblocks", None)
    if blocks is None:
        raise RecipeError(
            f"the text tower of {type(model).__name__} is not an open_clip text transformer "
            "(no transformer.resblocks); clipfit's text rules need one"
        )
    return list(blocks)


def text_tower_modules(model: nn.Module) -> list[nn.Module]:
    """Top-level modules and parameters' owners that make up the text encoder."""
    module = text_module(model)
    if module is None:
        text = getattr(model, "text", None)
        if text is None:
            raise RecipeError(f"{type(model).__name__} has no text tower")
        return [text]
    if module is not model:
        return [module]
    # open_clip.CLIP keeps the text encoder's parts on the model itself.
    return [model.transformer, model.token_embedding, model.ln_final]


def text_parameter_names(model: nn.Module) -> list[str]:
    names = [f"{_module_names(model)[id(m)]}.{n}" for m in text_tower_modules(model) for n, _ in m.named_parameters()]
    if text_module(model) is model:
        names += [n for n in ("positional_embedding", "text_projection") if getattr(model, n, None) is not None]
    return names


def _mlp_linears(block: nn.Module) -> list[nn.Linear]:
    mlp = getattr(block, "mlp", None)
    if mlp is None:
        raise RecipeError(f"text block {type(block).__name__} has no `mlp` feed-forward module")
    return [m for m in mlp.modules() if isinstance(m, nn.Linear)]


def _layernorms(tower: nn.Module) -> Iterator[nn.LayerNorm]:
    return (m for m in tower.modules() if isinstance(m, nn.LayerNorm) and m.elementwise_affine)


# ----------------------------------------------------------------------------- selectors


def text_ffn_output_biases(model: nn.Module) -> list[str]:
    """Bias of the output (last) Linear of every text feed-forward block."""
    names: list[str] = []
    for block in text_blocks(model):
        linears = [lin for lin in _mlp_linears(block) if lin.bias is not None]
        if linears:
            names += _param_names(model, linears[-1], ("bias",))
    return names


def text_ffn_biases(model: nn.Module) -> list[str]:
    """Biases of both Linears of every text feed-forward block."""
    return [
        n
        for block in text_blocks(model)
        for lin in _mlp_linears(block)
        if lin.bias is not None
        for n in _param_names(model, lin, ("bias",))
    ]


def image_layernorms(model: nn.Module) -> list[str]:
    """Weight and bias of every LayerNorm in the image tower."""
    return [n for ln in _layernorms(image_tower(model)) for n in _param_names(model, ln)]


def text_layernorms(model: nn.Module) -> list[str]:
    """Weight and bias of every LayerNorm in the text tower."""
    return [n for top in text_tower_modules(model) for ln in _layernorms(top) for n in _param_names(model, ln)]


def _is_bias(leaf: str) -> bool:
    # nn.Linear/LayerNorm/Conv register "bias"; nn.MultiheadAttention registers "in_proj_bias".
    return leaf == "bias" or leaf == "in_proj_bias"


def _biases_of(model: nn.Module, roots: list[nn.Module]) -> list[str]:
    names = _module_names(model)
    return [
        f"{names[id(m)]}.{leaf}"
        for root in roots
        for m in root.modules()
        for leaf, p in m.named_parameters(recurse=False)
        if p is not None and _is_bias(leaf)
    ]


def image_biases(model: nn.Module) -> list[str]:
    """Every bias tensor of the image tower."""
    return _biases_of(model, [image_tower(model)])


def text_biases(model: nn.Module) -> list[str]:
    """Every bias tensor of the text tower."""
    return _biases_of(model, text_tower_modules(model))


def _params_of_type(model: nn.Module, kind: type, what: str) -> list[str]:
    """Every parameter (sub-modules included) of the model's modules of type ``kind``."""
    names = _module_names(model)
    found = [f"{names[id(m)]}.{n}" for m in model.modules() if isinstance(m, kind) for n, _ in m.named_parameters()]
    if not found:
        raise RecipeError(f"the model has no {what}; the recipe's head attaches it before selection")
    return found


def prompt_context(model: nn.Module) -> list[str]:
    """CoOp's learnable context vectors."""
    return _params_of_type(model, PromptContext, "prompt context (CoOp)")


def adapter_parameters(model: nn.Module) -> list[str]:
    """Every parameter of the CLIP-Adapter bottleneck."""
    return _params_of_type(model, Adapter, "image adapter (CLIP-Adapter)")


def probe_parameters(model: nn.Module) -> list[str]:
    """The linear probe's weight and bias."""
    return _params_of_type(model, LinearProbe, "linear probe")


def all_but_logit_scale(model: nn.Module) -> list[str]:
    """Every parameter except the temperature (logit scale and bias)."""
    skip = {id(getattr(model, "logit_scale", None)), id(getattr(model, "logit_bias", None))}
    return [n for n, p in model.named_parameters() if id(p) not in skip]


# ----------------------------------------------------------------------------- registry

_TEXT_FFN_OUT = Rule("text", "bias of the output Linear of every feed-forward block", text_ffn_output_biases)
_IMAGE_LN = Rule("image", "weight and bias of every LayerNorm", image_layernorms)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("clipfit", "ClipFit: text FFN output biases + image LayerNorms", (_TEXT_FFN_OUT, _IMAGE_LN)),
        Recipe("clipfit-text", "ablation: text FFN output biases only", (_TEXT_FFN_OUT,)),
        Recipe("clipfit-image", "ablation: image LayerNorms only", (_IMAGE_LN,)),
        Recipe(
            "clipfit-fc",
            "ablation: both FFN biases of the text blocks + image LayerNorms",
            (Rule("text", "biases of both Linears of every feed-forward block", text_ffn_biases), _IMAGE_LN),
        ),
        Recipe(
            "bitfit",
            "BitFit: every bias of both towers",
            (Rule("image", "every bias", image_biases), Rule("text", "every bias", text_biases)),
        ),
        Recipe(
            "ln-tuning",
            "every LayerNorm of both towers",
            (_IMAGE_LN, Rule("text", "weight and bias of every LayerNorm", text_layernorms)),
        ),
        Recipe(
            "full",
            "full fine-tuning: every parameter except the logit scale",
            (Rule("model", "every parameter except logit_scale/logit_bias", all_but_logit_scale),),
        ),
        Recipe(
            "coop",
            "CoOp prompt tuning: learnable context vectors shared by all classes",
            (Rule("prompt", "the context vectors", prompt_context),),
            head="coop",
        ),
        Recipe(
            "clip-adapter",
            "CLIP-Adapter: a residual bottleneck MLP on the image features",
            (Rule("adapter", "the adapter's layers", adapter_parameters),),
            head="adapter",
        ),
        Recipe("zero-shot", "zero-shot CLIP: no training, evaluation only", (), kind="zero-shot"),
        Recipe(
            "linear-probe",
            "linear probe (CoOp's protocol): logistic regression on frozen L2-normalised image features",
            (Rule("probe", "the probe's weight and bias (fit by scikit-learn)", probe_parameters),),
            kind="linear-probe",
        ),
    )
}


def get_recipe(name: str) -> Recipe:
    """Look a recipe up by name; unknown names list the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise RecipeError(f"unknown recipe '{name}'; known recipes: {', '.join(RECIPES)}") from None


def select(model: nn.Module, recipe: Recipe | str) -> list[str]:
    """Names of the parameters ``recipe`` trains, in the model's parameter order.

    Raises:
        RecipeError: a rule matches nothing (e.g. LayerNorms of a ResNet image tower).
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    chosen: set[str] = set()
    for rule in recipe.rules:
        matched = rule.select(model)
        if not matched:
            tower = type(image_tower(model)).__name__ if rule.tower == "image" else rule.tower
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
    """A multi-line account of what each rule matched, for --dry-run -v and error reports."""
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    params = dict(model.named_parameters())
    lines = [f"recipe {recipe.name}: {recipe.description}"]
    for rule in recipe.rules:
        matched = rule.select(model)
        numel = sum(params[n].numel() for n in matched)
        lines.append(f"  [{rule.tower}] {rule.description}: {len(matched)} tensors, {numel:,d} values")
    return "\n".join(lines)
