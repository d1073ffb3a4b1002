"""Build open_clip models from (architecture, pretrained source).

``pretrained`` may be

* an open_clip tag for the architecture (``openai``, ``laion2b_s34b_b88k``, ...), fetched by
  open_clip into the Hugging Face cache (needs network or a warm cache);
* a clipfit tag (``shapes-world`` for ``shapes-vit-tiny``), a weights file shipped inside the package;
* a local weights file: an open_clip state dict (``.safetensors``, ``.bin``, ``.pt``, ``.pth``) or the
  TorchScript archive that OpenAI's ``clip`` package caches (``~/.cache/clip/ViT-B-16.pt``);
* ``hf-hub:org/repo``, an open_clip model on the Hugging Face hub;
* ``none`` (random initialisation).

Every file is read as data (:mod:`clipfit.archives`): nothing in a weights file runs. The network
is built with the activation the weights were trained with (QuickGELU for OpenAI's CLIP), and
every failure says which source failed and how to pass a local file instead.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transformer import QuickGELU
from torch import nn

from clipfit.archives import ArchiveError, read_weights
from clipfit.errors import ClipfitError

logger = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parent
MODEL_CONFIG_DIR = _PACKAGE_DIR / "model_configs"
ASSET_DIR = _PACKAGE_DIR / "assets"

NO_PRETRAINED = ("none", "random", "")
# clipfit's own pretrained tags: (architecture, tag) -> file inside the package.
CLIPFIT_PRETRAINED: dict[tuple[str, str], Path] = {
    ("shapes-vit-tiny", "shapes-world"): ASSET_DIR / "shapes-vit-tiny.safetensors",
}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


class ModelLoadError(ClipfitError, RuntimeError):
    """An architecture or its weights could not be built or loaded; the message says what to do."""


@dataclass(frozen=True)
class PreprocessSpec:
    """What images must look like for the model (from open_clip's preprocess config)."""

    size: int  # square input side in pixels
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # "bicubic" for CLIP


@dataclass
class ModelBundle:
    """A built model with everything needed to feed it."""

    model: nn.Module
    tokenizer: Callable[..., torch.Tensor]
    preprocess: PreprocessSpec
    name: str  # architecture name as given
    pretrained: str  # pretrained source as given ("none" for random init)
    source: str  # human-readable description of where the weights came from
    head: Any = None  # the recipe's head (clipfit.heads) once a run or clipfit.trained attaches one
    activation: str = "gelu"  # the transformer MLP activation the model was built with (quickgelu, gelu, ...)


def register_architectures() -> None:
    """Make clipfit's own small architectures known to open_clip's factory (idempotent)."""
    known = set(open_clip.list_models())
    if not {p.stem for p in MODEL_CONFIG_DIR.glob("*.json")} <= known:
        open_clip.add_model_config(MODEL_CONFIG_DIR)


def clipfit_architectures() -> list[str]:
    """Names of the architectures clipfit registers (tiny test models and the shapes-world model)."""
    return sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json"))


def normalise_pretrained(pretrained: str | None) -> str:
    """``None``/``""``/``random`` -> ``"none"``; anything else unchanged."""
    if pretrained is None or pretrained.strip().lower() in NO_PRETRAINED:
        return "none"
    return pretrained


def build_model(
    name: str,
    pretrained: str | None = "openai",
    device: str | torch.device = "cpu",
    quick_gelu: bool | None = None,
) -> ModelBundle:
    """Build an open_clip model in fp32 with its tokenizer and preprocessing spec.

    The architecture is built with the activation its weights were trained with: QuickGELU for
    weights whose open_clip tag says so (every ``openai`` tag) and for OpenAI's TorchScript
    archives, whatever the plain architecture name's config says (open_clip's "ViT-B-16" uses
    nn.GELU and only warns when OpenAI weights are loaded into it).

    Args:
        name: an open_clip or clipfit architecture name (``ViT-B-16``, ``ViT-B-16-quickgelu``, ``shapes-vit-tiny``).
        pretrained: see the module docstring.
        device: where the model lives.
        quick_gelu: True/False to force the activation; None follows the weights (above), else the
            architecture's config. A value that contradicts what the weights were trained with is refused.

    Raises:
        ModelLoadError: unknown architecture, unknown tag, missing file, failed download, weights that do
            not fit the architecture, or an activation that contradicts the weights. The message names the
            failing source and the fix.
    """
    register_architectures()
    pretrained = normalise_pretrained(pretrained)
    if pretrained.startswith("hf-hub:"):
        model, source = _from_hf_hub(pretrained, quick_gelu), f"Hugging Face hub '{pretrained[len('hf-hub:') :]}'"
        tokenizer_name = pretrained
    else:
        _check_architecture(name)
        tokenizer_name = name
        clipfit_file = CLIPFIT_PRETRAINED.get((name, pretrained))
        if pretrained == "none":
            model, source = _create(name, _activation(name, quick_gelu, None, "random init")), "random init"
        elif clipfit_file is not None:
            if not clipfit_file.is_file():
                raise ModelLoadError(
                    f"clipfit's packaged weights for {name} / {pretrained} are missing at {clipfit_file}. "
                    "Reinstall clipfit, or regenerate them with `make shapes-model`."
                )
            source = f"clipfit tag '{pretrained}' ({clipfit_file.name})"
            model = _from_local_file(name, clipfit_file, quick_gelu, source)
        elif os.path.isfile(os.path.expanduser(pretrained)):
            path = Path(os.path.expanduser(pretrained))
            source = f"local file {path}"
            model = _from_local_file(name, path, quick_gelu, source)
        elif pretrained in open_clip.list_pretrained_tags_by_model(name):
            model, source = _from_open_clip_tag(name, pretrained, quick_gelu), f"open_clip tag '{pretrained}'"
        else:
            raise ModelLoadError(_unknown_pretrained_message(name, pretrained))
    model = model.to(device).float()
    model.eval()
    activation = activation_of(model)
    logger.debug("built %s (%s activation) with weights from %s", name, activation, source)
    return ModelBundle(
        model=model,
        tokenizer=_tokenizer(tokenizer_name),
        preprocess=_preprocess_spec(model),
        name=name,
        pretrained=pretrained,
        source=source,
        activation=activation,
    )


def _check_architecture(name: str) -> None:
    if name not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if name.lower().replace("/", "-") in m.lower()][:8]
        hint = f" Similar names: {', '.join(close)}." if close else ""
        raise ModelLoadError(
            f"unknown architecture '{name}'.{hint} clipfit adds: {', '.join(clipfit_architectures())}; "
            "`python -c 'import open_clip; print(open_clip.list_models())'` lists open_clip's."
        )


def locate_weights(name: str, pretrained: str | None) -> str:
    """Where the weights of (architecture, pretrained source) are, fetching them if a tag's are not cached yet;
    a ModelLoadError (with the fix) when they cannot be had. Builds no model (a cheap check before a sweep)."""
    register_architectures()
    pretrained = normalise_pretrained(pretrained)
    if pretrained == "none":
        return "random init"
    if pretrained.startswith("hf-hub:"):
        from huggingface_hub import hf_hub_download

        repo = pretrained[len("hf-hub:") :]
        try:
            return str(Path(hf_hub_download(repo, "open_clip_config.json")).parent)
        except Exception as exc:
            raise ModelLoadError(f"could not find '{pretrained}' on the Hugging Face hub or its cache: {exc}") from exc
    _check_architecture(name)
    clipfit_file = CLIPFIT_PRETRAINED.get((name, pretrained))
    if clipfit_file is not None:
        return str(clipfit_file)
    if os.path.isfile(os.path.expanduser(pretrained)):
        return os.path.expanduser(pretrained)
    if pretrained not in open_clip.list_pretrained_tags_by_model(name):
        raise ModelLoadError(_unknown_pretrained_message(name, pretrained))
    return str(_tag_file(name, pretrained))


def to_half(model: nn.Module) -> nn.Module:
    """The released code's numerics (CoOp's "fp16" precision, OpenAI's ``convert_weights``): linear,
    convolution and attention weights and biases and both projections in fp16, LayerNorms in fp32.

    The trained text FFN biases are then fp16 tensors updated by SGD in fp16 without loss scaling, as
    in the released ClipFit code: its parameter-change magnitudes come out as the paper's. Images
    must go in as fp16 (:func:`clipfit.towers.image_input_dtype`).
    """
    open_clip.model.convert_weights_to_lp(model, torch.float16)
    return model


def activation_of(model: nn.Module) -> str:
    """The transformer MLP activation the model was built with: ``quickgelu``, ``gelu`` or the module's name."""
    kinds = {type(m) for m in model.modules() if isinstance(m, (QuickGELU, nn.GELU, nn.ReLU, nn.SiLU))}
    if QuickGELU in kinds:
        return "quickgelu"
    if nn.GELU in kinds:
        return "gelu"
    return next((k.__name__.lower() for k in kinds), "none")


def _config_quick_gelu(name: str) -> bool:
    return bool((open_clip.get_model_config(name) or {}).get("quick_gelu", False))


def _activation(name: str, asked: bool | None, trained_with: bool | None, source: str) -> bool:
    """QuickGELU or not: what the weights were trained with (``trained_with``; None when unknown),
    else what was asked, else the architecture's config. A contradiction is refused, never warned about."""
    configured = _config_quick_gelu(name)
    wanted = trained_with if trained_with is not None else (asked if asked is not None else configured)
    if asked is not None and asked != wanted:
        raise ModelLoadError(
            f"{source} was trained with {'QuickGELU' if wanted else 'GELU'}, but "
            f"{'--quick-gelu' if asked else '--no-quick-gelu'} asks for {'QuickGELU' if asked else 'GELU'}: "
            "the network would not be the one the weights belong to. Drop the flag."
        )
    if configured and not wanted:
        raise ModelLoadError(
            f"architecture {name} is configured with QuickGELU, but {source} needs GELU: use "
            f"--model {name.removesuffix('-quickgelu')} instead"
        )
    return wanted


def _create(name: str, quick_gelu: bool) -> nn.Module:
    """The architecture with random weights; open_clip's warnings about its config become errors."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip logs at the root logger that no weights are loaded: noise here
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu)
    finally:
        root.setLevel(level)
    _refuse_mismatch_warnings(caught, name)
    return model


def _refuse_mismatch_warnings(caught: list[warnings.WarningMessage], name: str) -> None:
    for warning in caught:
        text = str(warning.message)
        if "mismatch" in text.lower():
            raise ModelLoadError(f"open_clip warned while building {name}: {text}; clipfit refuses such a model")
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _tag_file(name: str, tag: str) -> Path:
    """The tag's weights file, fetched by open_clip into the Hugging Face cache (or found there)."""
    cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    try:
        path = Path(open_clip.pretrained.download_pretrained(cfg))
    except Exception as exc:  # open_clip raises RuntimeError/OSError/HF errors depending on the source
        where = f"hf-hub:{cfg['hf_hub']}" if cfg.get("hf_hub") else cfg.get("url", "its download URL")
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        openai_hint = (
            f" The file OpenAI's clip package caches (~/.cache/clip/{name}.pt) works too." if tag == "openai" else ""
        )
        raise ModelLoadError(
            f"could not fetch the weights of open_clip tag '{tag}' for {name} from {where}{offline}: "
            f"{type(exc).__name__}: {exc}\n"
            "Without network access, download the weights on a machine that has it, e.g.\n"
            f"  python -c \"import open_clip; open_clip.create_model('{name}', pretrained='{tag}')\"\n"
            "(the file lands in ~/.cache/huggingface/hub), copy the file here and pass it with "
            "--pretrained /path/to/open_clip_pytorch_model.bin." + openai_hint
        ) from exc
    if not str(path) or not path.is_file():
        raise ModelLoadError(f"open_clip found no weights file for tag '{tag}' of {name} (its config: {cfg})")
    return path


def _from_open_clip_tag(name: str, tag: str, quick_gelu: bool | None) -> nn.Module:
    """The tag's weights (:func:`_tag_file`), loaded as a local file would be, with the tag's activation."""
    path = _tag_file(name, tag)
    cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    trained_with = bool(cfg.get("quick_gelu", False))
    model = _from_local_file(name, path, quick_gelu, f"open_clip tag '{tag}'", trained_with)
    # the tag's own preprocessing (mean, std, interpolation, resize mode), as open_clip applies it
    preprocess = open_clip.transform.merge_preprocess_dict(open_clip.get_model_preprocess_cfg(model), cfg)
    open_clip.model.set_model_preprocess_cfg(model, preprocess)
    return model


def _from_hf_hub(ref: str, quick_gelu: bool | None) -> nn.Module:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = open_clip.create_model(ref, force_quick_gelu=bool(quick_gelu))
    except Exception as exc:
        raise ModelLoadError(
            f"could not load '{ref}' from the Hugging Face hub: {type(exc).__name__}: {exc}\n"
            f"Without network access, run `huggingface-cli download {ref[len('hf-hub:') :]}` on a machine with it, "
            "copy the folder here and pass its weights file with --model <architecture> --pretrained /path/to/file."
        ) from exc
    _refuse_mismatch_warnings(caught, ref)
    if quick_gelu is False and activation_of(model) == "quickgelu":
        raise ModelLoadError(f"{ref} is configured with QuickGELU; --no-quick-gelu contradicts it")
    return model


def _from_local_file(
    name: str, path: Path, quick_gelu: bool | None, source: str, trained_with: bool | None = None
) -> nn.Module:
    """Read the file as data (:mod:`clipfit.archives`; nothing in it runs) and load it into the architecture."""
    try:
        state_dict, kind = read_weights(path)
    except ArchiveError as exc:
        raise ModelLoadError(
            f"could not read weights from {path}: {exc}. Expected an open_clip state dict "
            f"({', '.join(_WEIGHT_SUFFIXES)}) or an OpenAI TorchScript .pt archive."
        ) from None
    if kind == "TorchScript":  # OpenAI's clip package: always trained with QuickGELU
        trained_with = True
    model = _create(name, _activation(name, quick_gelu, trained_with, source))
    if kind == "TorchScript":
        for key in ("input_resolution", "context_length", "vocab_size"):
            state_dict.pop(key, None)
        # TorchScript keeps buffers open_clip registers as non-persistent (the causal attn_mask).
        persistent = model.state_dict().keys()
        for key in [name for name, _ in model.named_buffers() if name not in persistent]:
            state_dict.pop(key, None)
    else:
        state_dict = open_clip.factory.convert_state_dict(model, state_dict)
        if "logit_scale" in state_dict and state_dict["logit_scale"].ndim != model.logit_scale.ndim:
            state_dict["logit_scale"] = state_dict["logit_scale"].reshape(model.logit_scale.shape)
    _load_strict(model, state_dict, name, path)
    return model


def _load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], name: str, path: Path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches (e.g. {'; '.join(mismatched[:3])})")
        if missing:
            parts.append(f"{len(missing)} tensors missing from the file (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
        raise ModelLoadError(
            f"the weights in {path} do not fit architecture '{name}': {'; '.join(parts)}. "
            "Pass the --model the file was trained with."
        )
    with torch.no_grad():
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()}, strict=True)


def _unknown_pretrained_message(name: str, pretrained: str) -> str:
    looks_like_path = os.sep in pretrained or pretrained.endswith(_WEIGHT_SUFFIXES) or pretrained.startswith("~")
    if looks_like_path:
        if Path(pretrained).expanduser().is_dir():
            return f"--pretrained {pretrained} is a folder; pass the weights file inside it"
        return f"pretrained weights file not found: {pretrained}. Check the path (it is read as a local file)."
    tags = open_clip.list_pretrained_tags_by_model(name) + [t for (m, t) in CLIPFIT_PRETRAINED if m == name]
    known = ", ".join(tags) if tags else "none for this architecture"
    return (
        f"unknown pretrained source '{pretrained}' for {name}. Known tags: {known}. "
        "Or pass a local weights file, hf-hub:ORG/REPO, or none (random init)."
    )


def _tokenizer(name: str) -> Callable[..., torch.Tensor]:
    try:
        return open_clip.get_tokenizer(name)
    except Exception as exc:
        raise ModelLoadError(f"could not build the tokenizer for {name}: {exc}") from exc


def _preprocess_spec(model: nn.Module) -> PreprocessSpec:
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", 224)
    size = size if isinstance(size, int) else int(size[0])
    return PreprocessSpec(
        size=size,
        mean=tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        interpolation=cfg.get("interpolation", "bicubic"),
    )
