"""Build open_clip models from (architecture, pretrained source).

``pretrained`` may be

* an open_clip tag for the architecture (``openai``, ``laion2b_s34b_b88k``, ...), fetched by
  open_clip (needs network or a warm cache);
* a clipfit tag (``shapes-world`` for ``shapes-vit-tiny``), a weights file shipped inside the package;
* a local weights file: an open_clip state dict (``.safetensors``, ``.bin``, ``.pt``, ``.pth``) or the
  TorchScript archive that OpenAI's ``clip`` package caches (``~/.cache/clip/ViT-B-16.pt``);
* ``hf-hub:org/repo``, an open_clip model on the Hugging Face hub;
* ``none`` (random initialisation).

Every failure says which source failed and how to pass a local file instead.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

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
    head: Any = None  # the recipe head of a trained model (clipfit.heads), set by clipfit.run.build_trained_model


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


def build_model(name: str, pretrained: str | None = "openai", device: str | torch.device = "cpu") -> ModelBundle:
    """Build an open_clip model in fp32 with its tokenizer and preprocessing spec.

    Args:
        name: an open_clip or clipfit architecture name (``ViT-B-16``, ``shapes-vit-tiny``).
        pretrained: see the module docstring.
        device: where the model lives.

    Raises:
        ModelLoadError: unknown architecture, unknown tag, missing file, failed download, or weights
            that do not fit the architecture. The message names the failing source and the fix.
    """
    register_architectures()
    pretrained = normalise_pretrained(pretrained)
    if pretrained.startswith("hf-hub:"):
        model, source = _from_hf_hub(pretrained), f"Hugging Face hub '{pretrained[len('hf-hub:') :]}'"
        tokenizer_name = pretrained
    else:
        _check_architecture(name)
        tokenizer_name = name
        clipfit_file = CLIPFIT_PRETRAINED.get((name, pretrained))
        if pretrained == "none":
            model, source = _create(name, None), "random init"
        elif clipfit_file is not None:
            if not clipfit_file.is_file():
                raise ModelLoadError(
                    f"clipfit's packaged weights for {name} / {pretrained} are missing at {clipfit_file}. "
                    "Reinstall clipfit, or regenerate them with `make shapes-model`."
                )
            model, source = _from_local_file(name, clipfit_file), f"clipfit tag '{pretrained}' ({clipfit_file.name})"
        elif os.path.isfile(os.path.expanduser(pretrained)):
            path = Path(os.path.expanduser(pretrained))
            model, source = _from_local_file(name, path), f"local file {path}"
        elif pretrained in open_clip.list_pretrained_tags_by_model(name):
            model, source = _from_open_clip_tag(name, pretrained), f"open_clip tag '{pretrained}'"
        else:
            raise ModelLoadError(_unknown_pretrained_message(name, pretrained))
    model = model.to(device).float()
    model.eval()
    logger.debug("built %s with weights from %s", name, source)
    return ModelBundle(
        model=model,
        tokenizer=_tokenizer(tokenizer_name),
        preprocess=_preprocess_spec(model),
        name=name,
        pretrained=pretrained,
        source=source,
    )


def _check_architecture(name: str) -> None:
    if name not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if name.lower().replace("/", "-") in m.lower()][:8]
        hint = f" Similar names: {', '.join(close)}." if close else ""
        raise ModelLoadError(
            f"unknown architecture '{name}'.{hint} clipfit adds: {', '.join(clipfit_architectures())}; "
            "`python -c 'import open_clip; print(open_clip.list_models())'` lists open_clip's."
        )


def _create(name: str, pretrained: str | None, **kwargs) -> nn.Module:
    # open_clip warns on the root logger when no weights are loaded; for an explicit "none" that is noise.
    root = logging.getLogger()
    level = root.level
    if pretrained is None:
        root.setLevel(logging.ERROR)
    try:
        return open_clip.create_model(name, pretrained=pretrained, **kwargs)
    finally:
        root.setLevel(level)


def _from_open_clip_tag(name: str, tag: str) -> nn.Module:
    try:
        return open_clip.create_model(name, pretrained=tag)
    except Exception as exc:  # open_clip raises RuntimeError/OSError/HF errors depending on the source
        cfg = open_clip.get_pretrained_cfg(name, tag) or {}
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


def _from_hf_hub(ref: str) -> nn.Module:
    try:
        return open_clip.create_model(ref)
    except Exception as exc:
        raise ModelLoadError(
            f"could not load '{ref}' from the Hugging Face hub: {type(exc).__name__}: {exc}\n"
            f"Without network access, run `huggingface-cli download {ref[len('hf-hub:') :]}` on a machine with it, "
            "copy the folder here and pass its weights file with --model <architecture> --pretrained /path/to/file."
        ) from exc


def _is_torchscript_archive(path: Path) -> bool:
    """OpenAI's clip package caches TorchScript archives; their zip holds ``code/`` and ``constants.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") for n in archive.namelist())


def _from_local_file(name: str, path: Path) -> nn.Module:
    if _is_torchscript_archive(path):
        # OpenAI checkpoints use QuickGELU; open_clip's plain "ViT-B-16" config uses nn.GELU.
        model = _create(name, None, force_quick_gelu=True)
        try:
            state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as exc:
            raise ModelLoadError(f"{path} looks like a TorchScript archive but could not be read: {exc}") from exc
        for key in ("input_resolution", "context_length", "vocab_size"):
            state_dict.pop(key, None)
        # TorchScript keeps buffers open_clip registers as non-persistent (the causal attn_mask).
        persistent = model.state_dict().keys()
        for key in [name for name, _ in model.named_buffers() if name not in persistent]:
            state_dict.pop(key, None)
        _load_strict(model, state_dict, name, path)
        return model
    model = _create(name, None)
    try:
        state_dict = open_clip.factory.load_state_dict(str(path))
    except Exception as exc:
        raise ModelLoadError(
            f"could not read weights from {path}: {type(exc).__name__}: {exc}. Expected an open_clip state dict "
            f"({', '.join(_WEIGHT_SUFFIXES)}) or an OpenAI TorchScript .pt archive."
        ) from exc
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
