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
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from clipfit.data.records import DEFAULT_MODEL
from clipfit.data.registry import get_spec
from clipfit.data.sampling import ALL_SHOTS
from clipfit.errors import ConfigError
from clipfit.recipes import Recipe, get_recipe, head_options

logger = logging.getLogger(__name__)

SETTINGS = ("base2new", "fewshot")
# auto, fp32, bf16/fp16 autocast, or half: the released code's numerics (clipfit.models.to_half)
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "half")
# which towers recompute their blocks' activations in backward (clipfit.towers.set_grad_checkpointing)
GRAD_CHECKPOINTING = ("text", "image", "all")
# where training views are cropped from (clipfit.data.loaders.TrainBatches): the original images, or a crop-size copy
TRAIN_CACHES = ("none", "crop-size")
# how the test-set cache decodes test images (clipfit.data.testcache): PIL in DataLoader workers, or nvjpeg on the GPU
EVAL_DECODERS = ("pil", "nvjpeg")
# submitit's executors for a sweep's runs (clipfit.sweeps): a SLURM cluster, or local processes to try it
CLUSTERS = ("slurm", "local", "debug")

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
    # base2new (train on base classes) or fewshot (all classes); None: the dataset's default (base2new for the
    # benchmarks and shapes, fewshot for folder:/csv: data)
    setting: str | None = None
    shots: int | str = 16  # training images per class (K), or "all": every training image
    template: str | None = None  # prompt template override; None: the dataset's template
    num_workers: int | None = None  # DataLoader workers; None: half the cores (0 for generated data)
    skip_bad_images: bool = False  # leave out images that cannot be read (the run is marked not comparable)
    train_cache: str = "none"  # none: crop views from the full-size images (Dassl); crop-size: from a crop-size copy


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
# config.json files written before --train-cache existed: those runs cropped their views from the crop-size cache
_LEGACY_TRAIN_CACHE = "crop-size"


def flatten_settings(settings: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Nested settings (``RunConfig.to_dict()``) as {key path: value}; lists become tuples, so values can be compared
    and hashed (the run directory's settings check, --resume's, and the analyses' configurations use it)."""
    out: dict[tuple[str, ...], Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            out.update(flatten_settings(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = tuple(value) if isinstance(value, list) else value
    return out


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
    # epochs between validation accuracies (the few-shot val split, logged in metrics.jsonl; 0: none);
    # None: the dataset's default (every epoch for folder:/csv: data, none for the benchmarks and shapes)
    val_every: int | None = None
    eval_cache: str | None = None  # test-set cache: on, off or a size cap (20GB); None: $CLIPFIT_EVAL_CACHE, else on
    eval_decoder: str | None = None  # pil or nvjpeg (other pixels); None: $CLIPFIT_EVAL_DECODER, else pil

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Settings from their dictionary (``to_dict``, or a config.json record); unknown keys are ignored.

        Raises:
            ConfigError: a value of the wrong type (``optim.lr: expected a number, got 'x'``).
        """

        def build(kind, values, prefix: str):
            values = _section(values, prefix)
            names = {f.name for f in dataclasses.fields(kind)}
            return kind(**{k: _typed(kind, k, v, prefix) for k, v in values.items() if k in names})

        data = _section(data, "")
        top_fields = {f.name for f in dataclasses.fields(cls)} - {"model", "data", "optim", "head"}
        head = {_LEGACY_HEAD_OPTIONS.get(k, k): v for k, v in _section(data.get("head") or {}, "head.").items()}
        data_values = dict(_section(data.get("data", {}), "data."))
        if "data" in data and "train_cache" not in data_values:
            data_values["train_cache"] = _LEGACY_TRAIN_CACHE
        return cls(
            model=build(ModelConfig, data.get("model", {}), "model."),
            data=build(DataConfig, data_values, "data."),
            optim=build(OptimConfig, data.get("optim", {}), "optim."),
            head=head,
            **{k: _typed(cls, k, v, "") for k, v in data.items() if k in top_fields},
        )


def _section(values: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'the settings'}: expected a JSON object, got {values!r:.60}")
    return values


def _typed(kind: type, name: str, value: Any, prefix: str) -> Any:
    """``value`` if it has the type the field ``name`` of ``kind`` declares (an int is also a float)."""
    hint = typing.get_type_hints(kind)[name]
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return value
    for t in allowed:
        if t is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if t in (int, str, bool) and isinstance(value, t) and (t is bool or not isinstance(value, bool)):
            return value
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    expected = " or ".join(names.get(t, "null") for t in allowed)
    raise ConfigError(f"{prefix}{name}: expected {expected}, got {value!r:.60}")


def paper_epochs(dataset: str) -> int:
    """The paper's epochs for ``dataset``, from its record (an unknown name is a DataError listing the known)."""
    return get_spec(dataset).epochs


def default_setting(dataset: str) -> str:
    """The setting a dataset trains in when none is given: base-to-new for the benchmarks and the shapes
    world (the paper's protocol), fewshot (all classes) for the user's own folder:/csv: images."""
    return get_spec(dataset).setting


def paper_reg_weight(dataset: str, setting: str) -> float:
    """The paper's lambda: ClipFit's for base-to-new, the dataset record's for few-shot."""
    if setting == "base2new":
        return PAPER_BASE2NEW_REG_WEIGHT
    return get_spec(dataset).fewshot_reg_weight


PRESETS = ("paper",)


def resolve(cfg: RunConfig) -> RunConfig:
    """A copy with every None default filled in from the dataset and the paper; validates choices."""
    cfg = RunConfig.from_dict(cfg.to_dict())
    spec = get_spec(cfg.data.dataset)
    if cfg.data.setting is None:
        cfg.data.setting = spec.setting
    if cfg.val_every is None:
        cfg.val_every = spec.val_every
    if cfg.data.setting not in SETTINGS:
        raise ConfigError(f"unknown setting '{cfg.data.setting}'; expected one of {', '.join(SETTINGS)}")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{cfg.precision}'; expected one of {', '.join(PRECISIONS)}")
    if cfg.data.train_cache not in TRAIN_CACHES:
        raise ConfigError(
            f"unknown training-image cache '{cfg.data.train_cache}'; expected one of {', '.join(TRAIN_CACHES)}"
        )
    default_name, default_pretrained = spec.model
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
    if not (math.isfinite(cfg.optim.reg_weight) and cfg.optim.reg_weight >= 0):
        raise ConfigError(f"the regulariser weight must be a finite number >= 0, got {cfg.optim.reg_weight}")
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
    if isinstance(cfg.data.shots, str) and cfg.data.shots != ALL_SHOTS:
        raise ConfigError(f"shots must be a number of images per class or '{ALL_SHOTS}', got {cfg.data.shots!r}")
    for name, value, low in (
        ("epochs", cfg.optim.epochs, 1),
        ("batch size", cfg.optim.batch_size, 1),
        ("shots", 1 if cfg.data.shots == ALL_SHOTS else cfg.data.shots, 1),
        ("log every", cfg.log_every, 1),
        ("checkpoint every", cfg.checkpoint_every, 1),
        ("validation every", cfg.val_every, 0),
    ):
        if value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}")
    if cfg.optim.warmup_epochs < 0 or cfg.optim.warmup_epochs >= cfg.optim.epochs:
        raise ConfigError(f"warm-up epochs must be in [0, epochs), got {cfg.optim.warmup_epochs}")
    optim = cfg.optim
    for name, value, ok, rule in (
        ("the learning rate (--lr)", optim.lr, optim.lr > 0, "a finite number > 0"),
        ("the warm-up learning rate (--warmup-lr)", optim.warmup_lr, optim.warmup_lr >= 0, "a finite number >= 0"),
        ("the momentum (--momentum)", optim.momentum, 0 <= optim.momentum < 1, "in [0, 1)"),
        ("the weight decay (--weight-decay)", optim.weight_decay, optim.weight_decay >= 0, "a finite number >= 0"),
    ):
        if not (math.isfinite(value) and ok):  # NaN fails every comparison, inf is refused explicitly
            raise ConfigError(f"{name} must be {rule}, got {value}")
    if not 0 <= cfg.seed < 2**63:
        raise ConfigError(f"the seed must be in [0, 2^63), got {cfg.seed}")
    check_run_options(cfg)
    if cfg.grad_checkpointing not in (None, *GRAD_CHECKPOINTING):
        raise ConfigError(
            f"unknown grad checkpointing '{cfg.grad_checkpointing}'; expected one of {', '.join(GRAD_CHECKPOINTING)}"
        )
    return cfg


def check_run_options(cfg: RunConfig) -> None:
    """The settings that only say how a run is evaluated and loaded: positive batch sizes and caps.

    ``clipfit-eval`` checks its overrides of a recorded run with this too.
    """
    for name, value, low in (
        ("--eval-batch-size", cfg.eval_batch_size, 1),
        ("--max-eval-images", cfg.max_eval_images, 1),
        ("--num-workers", cfg.data.num_workers, 0),
    ):
        if value is not None and value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}")


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
