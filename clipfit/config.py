"""Typed settings of a run, and how unset ones are resolved.

The CLI maps argparse onto these dataclasses once; unset flags stay None and :func:`resolve` fills
them, once, from the dataset's record (:mod:`clipfit.data.catalog`: its model, the paper's epochs and
few-shot lambda), the recipe's record (:mod:`clipfit.recipes`: its head options and where its
published settings differ) and the paper's values (PAPER.md sections 2-3): SGD lr 0.002, momentum
0.9, weight decay 5e-4, batch 32, one warm-up epoch at 1e-5, then cosine; lambda 8 for base-to-new.
The lambda a run records is the one its loss has: 0 for a recipe that cannot move the text features.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from clipfit.data.records import DEFAULT_MODEL
from clipfit.data.registry import get_spec
from clipfit.errors import ConfigError
from clipfit.recipes import Recipe, get_recipe, head_options
from clipfit.towers import GRAD_CHECKPOINTING

logger = logging.getLogger(__name__)

SETTINGS = ("base2new", "fewshot")
# auto, fp32, bf16/fp16 autocast, or half: the released code's numerics (clipfit.models.to_half)
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "half")

# ---------------------------------------------------------------------------- paper presets
# The per-dataset epochs and few-shot lambda are in each dataset's record (clipfit.data.catalog);
# base-to-new uses ClipFit's lambda on every dataset.
PAPER_BASE2NEW_REG_WEIGHT = 8.0

PAPER_LR = 0.002
PAPER_BATCH_SIZE = 32


@dataclass
class ModelConfig:
    name: str | None = None  # open_clip architecture; None: the dataset's default (ViT-B-16; shapes-vit-tiny)
    pretrained: str | None = None  # open_clip tag, local file, hf-hub:..., none; None: the dataset's default
    quick_gelu: bool | None = None  # QuickGELU (OpenAI's CLIP); None: as the weights were trained, else the config's


@dataclass
class DataConfig:
    dataset: str = "shapes"  # a registered dataset name, folder:PATH or csv:FILE
    data_root: str | None = None  # folder holding the dataset folders (CoOp layout)
    make_split: bool = False  # without a published split file, draw a random one (results not comparable)
    classnames: str | None = None  # class-name file of a folder:/csv: dataset (one name per line, label order)
    setting: str = "base2new"  # base2new (train on base classes) or fewshot (all classes)
    shots: int = 16  # training images per class (K)
    template: str | None = None  # prompt template override; None: the dataset's template
    num_workers: int | None = None  # DataLoader workers; None: half the cores (0 for generated data)


@dataclass
class OptimConfig:
    lr: float | None = None  # peak SGD learning rate; None: 0.002 (the recipe's own value for full fine-tuning)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # applied to every trained tensor
    epochs: int | None = None  # None: the recipe's published value, else the paper's (10 for ImageNet/Food101, 100)
    warmup_epochs: int = 1  # epochs at the constant warm-up learning rate
    warmup_lr: float = 1e-5  # constant learning rate during warm-up
    batch_size: int | None = None  # images per step over all processes; None: the recipe's published value, else 32
    reg_weight: float | None = None  # lambda of the text regulariser; None: the paper's value for the setting


# config.json files written before head options were named after their flags
_LEGACY_HEAD_OPTIONS = {"coop_n_ctx": "coop_ctx"}


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    head: dict[str, Any] = field(default_factory=dict)  # options of the recipe's head (clipfit.heads), by name
    recipe: str = "clipfit"  # which tensors train (see clipfit.recipes)
    seed: int = 1  # few-shot draw, shuffling and augmentation
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    device: str = "auto"  # auto: cuda if available
    log_every: int = 10  # steps between metrics.jsonl / layers.jsonl records
    eval_batch_size: int = 256  # images per evaluation batch
    max_eval_images: int | None = None  # cap on test images per class subset (quick checks; not comparable)
    compile: bool = False  # torch.compile the training forward (speed only; falls back to eager when it cannot)
    grad_checkpointing: str | None = None  # recompute block activations in backward: text, image or all towers
    checkpoint_every: int = 1  # epochs between resumable checkpoints (the last epoch always writes one)
    eval_cache: str | None = None  # test-set cache: on, off or a size cap (20GB); None: $CLIPFIT_EVAL_CACHE, else on
    eval_decoder: str | None = None  # pil or nvjpeg (other pixels); None: $CLIPFIT_EVAL_DECODER, else pil

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        def build(kind, values):
            names = {f.name for f in dataclasses.fields(kind)}
            return kind(**{k: v for k, v in values.items() if k in names})

        top_fields = {f.name for f in dataclasses.fields(cls)} - {"model", "data", "optim", "head"}
        head = {_LEGACY_HEAD_OPTIONS.get(k, k): v for k, v in (data.get("head") or {}).items()}
        return cls(
            model=build(ModelConfig, data.get("model", {})),
            data=build(DataConfig, data.get("data", {})),
            optim=build(OptimConfig, data.get("optim", {})),
            head=head,
            **{k: v for k, v in data.items() if k in top_fields},
        )


def paper_epochs(dataset: str) -> int:
    """The paper's epochs for ``dataset``, from its record (an unknown name is a DataError listing the known)."""
    return get_spec(dataset).epochs


def paper_reg_weight(dataset: str, setting: str) -> float:
    """The paper's lambda: ClipFit's for base-to-new, the dataset record's for few-shot."""
    if setting == "base2new":
        return PAPER_BASE2NEW_REG_WEIGHT
    return get_spec(dataset).fewshot_reg_weight


PRESETS = ("paper",)


def resolve(cfg: RunConfig) -> RunConfig:
    """A copy with every None default filled in from the dataset and the paper; validates choices."""
    cfg = RunConfig.from_dict(cfg.to_dict())
    if cfg.data.setting not in SETTINGS:
        raise ConfigError(f"unknown setting '{cfg.data.setting}'; expected one of {', '.join(SETTINGS)}")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{cfg.precision}'; expected one of {', '.join(PRECISIONS)}")
    default_name, default_pretrained = get_spec(cfg.data.dataset).model
    if cfg.model.name is None:
        cfg.model.name = default_name
        if cfg.model.pretrained is None:
            cfg.model.pretrained = default_pretrained
    if cfg.model.pretrained is None:
        cfg.model.pretrained = DEFAULT_MODEL[1] if cfg.model.name != default_name else default_pretrained
    recipe = get_recipe(cfg.recipe)
    if cfg.optim.epochs is None:
        cfg.optim.epochs = recipe.defaults.get("epochs") or paper_epochs(cfg.data.dataset)
    if cfg.optim.batch_size is None:
        cfg.optim.batch_size = recipe.defaults.get("batch_size", PAPER_BATCH_SIZE)
    if cfg.optim.lr is None:
        cfg.optim.lr = recipe.defaults.get("lr", PAPER_LR)
    asked = cfg.optim.reg_weight
    if cfg.optim.reg_weight is None:
        cfg.optim.reg_weight = recipe.defaults.get("reg_weight", paper_reg_weight(cfg.data.dataset, cfg.data.setting))
    if cfg.optim.reg_weight < 0:
        raise ConfigError(f"the regulariser weight must be >= 0, got {cfg.optim.reg_weight}")
    if cfg.optim.reg_weight > 0 and not recipe.changes_text:
        # The regulariser holds the class text features near t0; a recipe that cannot move them has no
        # such term. Decided here, once, so config.json and results.json record the lambda the loss had.
        if asked is not None:
            logger.warning("recipe %s does not train the text side: no text regulariser (lambda 0)", cfg.recipe)
        cfg.optim.reg_weight = 0.0
    cfg.head = resolve_head_options(recipe, cfg.head)
    # The decoder makes the test pixels (clipfit.data.testcache): recorded, so a resume cannot switch it.
    from clipfit.data.testcache import CachePolicy

    cfg.eval_decoder = CachePolicy.parse(cfg.eval_cache, cfg.eval_decoder).decoder  # also checks --eval-cache
    for name, value, low in (
        ("epochs", cfg.optim.epochs, 1),
        ("batch size", cfg.optim.batch_size, 1),
        ("shots", cfg.data.shots, 1),
        ("log every", cfg.log_every, 1),
        ("checkpoint every", cfg.checkpoint_every, 1),
    ):
        if value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}")
    if cfg.optim.warmup_epochs < 0 or cfg.optim.warmup_epochs >= cfg.optim.epochs:
        raise ConfigError(f"warm-up epochs must be in [0, epochs), got {cfg.optim.warmup_epochs}")
    if cfg.optim.lr <= 0:
        raise ConfigError(f"the learning rate must be positive, got {cfg.optim.lr}")
    if cfg.grad_checkpointing not in (None, *GRAD_CHECKPOINTING):
        raise ConfigError(
            f"unknown grad checkpointing '{cfg.grad_checkpointing}'; expected one of {', '.join(GRAD_CHECKPOINTING)}"
        )
    return cfg


def resolve_head_options(recipe: Recipe, given: dict[str, Any]) -> dict[str, Any]:
    """Every option of the recipe's head, ``given`` values first, its defaults for the rest.

    Options of other recipes' heads are dropped (a sweep over recipes shares one set of flags);
    names no head knows are refused.
    """
    known = head_options()
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(f"unknown head option(s) {', '.join(unknown)}; known: {', '.join(known) or 'none'}")
    own = {f.name for f in recipe.head.options()}
    head = recipe.make_head({k: v for k, v in given.items() if k in own})
    return {k: v for k, v in head.describe().items() if k != "kind"}
