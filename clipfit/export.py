"""A trained model as a folder others can load: a merged open_clip checkpoint, the small delta, a model card.

``clipfit-export RUN --out DIR`` (and :meth:`clipfit.api.FineTuned.export`) writes::

    open_clip_model.safetensors  the whole fine-tuned open_clip model, fp32 (in-place recipes only)
    open_clip_config.json        {"model_cfg", "preprocess_cfg"}: what open_clip's hf-hub:/local-dir: loaders read
    clipfit_delta.safetensors    the trained tensors only (init/ and final/), a clipfit checkpoint
    clipfit_config.json          the base (architecture, pretrained source, activation), recipe, head, class
                                 names, template, results and signature
    README.md                    the model card (:mod:`clipfit.modelcard`)

The merged file is what ``open_clip.create_model(ARCH, pretrained=FILE)`` and
``open_clip.create_model("local-dir:DIR")`` load: the layout of open_clip's own ``push_to_hf_hub``.
It can hold only the tensors of open_clip's model, so it is written for recipes that train tensors
of the model itself (clipfit, bitfit, ln-tuning, full, ...); a recipe with a head (CoOp's context,
CLIP-Adapter's MLP, MaPLe's prompts, the linear probe) gets only the delta, whose checkpoint metadata
names the head and its options, and :func:`clipfit.load` rebuilds it onto the named pretrained
weights, as peft applies an adapter. A fingerprint of frozen base tensors, taken at export, tells a
delta applied onto other weights than the run's.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors.torch import save_file
from torch import nn

from clipfit.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from clipfit.errors import ClipfitError
from clipfit.files import atomic_write_bytes, atomic_write_text
from clipfit.heads import ClipHead
from clipfit.modelcard import model_card
from clipfit.models import clipfit_architectures
from clipfit.recipes import get_recipe

logger = logging.getLogger(__name__)

FORMAT = "clipfit-export/1"
MERGED_FILE = "open_clip_model.safetensors"  # open_clip's HF_SAFE_WEIGHTS_NAME: the file its hf-hub: loader fetches
OPEN_CLIP_CONFIG_FILE = "open_clip_config.json"  # open_clip's HF_CONFIG_NAME
DELTA_FILE = "clipfit_delta.safetensors"
CONFIG_FILE = "clipfit_config.json"
CARD_FILE = "README.md"
# Checkpoint metadata of a run's progress that an export does not carry.
_PROGRESS_KEYS = ("format", "trained", "grad_sq_cum", "grad_scaler", "step")
_OWN = frozenset(clipfit_architectures())


class ExportError(ClipfitError, RuntimeError):
    """A model cannot be exported as asked, or an export folder cannot be read."""


@dataclass
class Exported:
    """What :func:`write_export` wrote."""

    folder: Path
    delta: Path  # the trained tensors (a clipfit checkpoint)
    merged: Path | None  # the merged open_clip weights; None when the recipe's head cannot go into one
    open_clip_name: str | None  # architecture name for open_clip.create_model(name, pretrained=merged)
    force_quick_gelu: bool  # open_clip.create_model also needs force_quick_gelu=True (no -quickgelu name exists)
    why_no_merged: str | None  # why there is no merged file (a head recipe; no open_clip config for the architecture)

    def open_clip_lines(self) -> list[str]:
        """The open_clip calls that load the merged file (empty without one)."""
        if self.merged is None:
            return []
        lines = [f'open_clip.create_model("local-dir:{self.folder}")']
        if self.open_clip_name is not None:
            quick = ", force_quick_gelu=True" if self.force_quick_gelu else ""
            # clipfit's own architectures are known to open_clip once clipfit registers them
            own = "  # after clipfit.models.register_architectures()" if self.open_clip_name in _OWN else ""
            lines.insert(0, f'open_clip.create_model("{self.open_clip_name}", pretrained="{self.merged}"{quick}){own}')
        return lines


def head_refusal(recipe: str) -> str | None:
    """Why a merged open_clip file cannot hold ``recipe``'s model (its head), or None when it can."""
    head = get_recipe(recipe).head
    if head is ClipHead:
        return None
    return (
        f"the {recipe} recipe's {head.kind} head ({head.__name__}) adds tensors and a forward that open_clip's "
        "model does not have, so a merged open_clip file cannot hold it; the delta carries it (load it with "
        "clipfit.load)"
    )


def open_clip_name(name: str, activation: str) -> tuple[str | None, bool]:
    """The architecture name open_clip builds the exported network under, and whether it also needs
    ``force_quick_gelu=True`` (a QuickGELU network whose architecture has no ``-quickgelu`` twin)."""
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        return None, False
    if activation != "quickgelu" or cfg.get("quick_gelu"):
        return name, False
    twin = f"{name}-quickgelu"
    if open_clip.get_model_config(twin) is not None:
        return twin, False
    return name, True


def open_clip_config(model: nn.Module, name: str, activation: str) -> dict[str, Any] | None:
    """``{"model_cfg", "preprocess_cfg"}`` as open_clip's loaders read it; None for an architecture open_clip
    has no config of (then no merged file can be loaded by name or folder)."""
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        return None
    cfg = copy.deepcopy(cfg)
    if activation == "quickgelu":
        cfg["quick_gelu"] = True  # what open_clip's "-quickgelu" configs add: local-dir: builds QuickGELU
    preprocess = dict(open_clip.get_model_preprocess_cfg(model))
    return {"model_cfg": cfg, "preprocess_cfg": preprocess}


def base_fingerprint(model: nn.Module, trained: list[str]) -> str | None:
    """A hash of a few tensors the recipe left at their pretrained values (first, middle and last in model
    order): equal exactly when a delta is applied onto the weights it was trained from. None when every
    tensor trained (``full``)."""
    skip = set(trained)
    frozen = [(n, p) for n, p in model.named_parameters() if n not in skip]
    if not frozen:
        return None
    digest = hashlib.sha256()
    for index in sorted({0, len(frozen) // 2, len(frozen) - 1}):
        name, param = frozen[index]
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _merged_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict in fp32 (a half-precision run's weights too: open_clip builds fp32 models)."""
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        state[key] = (value.float() if value.is_floating_point() else value).contiguous().clone()
    return state


def delta_meta(ckpt: Checkpoint) -> dict[str, Any]:
    """The checkpoint's metadata without a run's progress records (optimizer, step, gradient sums)."""
    return {k: v for k, v in ckpt.meta.items() if k not in _PROGRESS_KEYS}


def write_export(
    folder: str | Path,
    model: nn.Module,
    ckpt: Checkpoint,
    record: Mapping[str, Any],
    merged: bool | None = None,
    repo: str | None = None,
) -> Exported:
    """Write the export of a trained model into ``folder`` (created; files of an earlier export replaced).

    Args:
        folder: where the files go.
        model: the trained open_clip model (head modules attached), as :func:`clipfit.trained.build_trained_model`
            returns it.
        ckpt: its checkpoint (the delta's tensors and metadata).
        record: what the run recorded (results.json or the checkpoint metadata): results and command for the card.
        merged: True: write the merged open_clip file (refused for a recipe with a head); False: the delta only;
            None: the merged file whenever the recipe allows it.
        repo: the Hub repository the export is for (``USER/REPO``): the model card's load lines name it.

    Raises:
        ExportError: ``merged=True`` for a recipe whose head a merged file cannot hold, or an architecture
            open_clip has no config of.
    """
    folder = Path(folder).expanduser()
    meta = delta_meta(ckpt)
    recipe, name, activation = meta.get("recipe") or "clipfit", meta["model"], meta.get("activation") or "gelu"
    why_not = head_refusal(recipe)
    oc_config = open_clip_config(model, name, activation) if why_not is None else None
    if why_not is None and oc_config is None:
        why_not = f"open_clip has no config of the architecture {name}, so it could not build the merged file's model"
    if merged and why_not:
        raise ExportError(f"cannot write a merged open_clip model: {why_not}")
    folder.mkdir(parents=True, exist_ok=True)
    want_merged = why_not is None and merged is not False
    merged_path = folder / MERGED_FILE
    if not want_merged:  # a merged file of an earlier export into this folder must not outlive it
        merged_path.unlink(missing_ok=True)
        (folder / OPEN_CLIP_CONFIG_FILE).unlink(missing_ok=True)
    oc_name, force_quick = open_clip_name(name, activation)
    if want_merged:
        state = _merged_state(model)
        header = {"format": "pt", "clipfit_signature": str(meta.get("signature", ""))}
        atomic_write_bytes(merged_path, lambda tmp: save_file(state, tmp, metadata=header))
        atomic_write_text(folder / OPEN_CLIP_CONFIG_FILE, json.dumps(oc_config, indent=2) + "\n")
    trained = list(ckpt.meta.get("trained", ckpt.final))
    export_info = {
        "format": FORMAT,
        "base": {
            "model": name,
            "pretrained": meta.get("pretrained"),
            "activation": activation,
            "fingerprint": base_fingerprint(model, trained),
        },
        "recipe": recipe,
        "head": meta.get("head"),
        "classnames": meta.get("classnames"),
        "template": meta.get("template"),
        "signature": meta.get("signature"),
        "files": {"delta": DELTA_FILE, "merged": MERGED_FILE if want_merged else None},
        "merged_note": why_not or (None if want_merged else "not asked for (--no-merged)"),
        "open_clip": {"name": oc_name, "force_quick_gelu": force_quick} if want_merged else None,
        "record": dict(record),
    }
    delta = write_checkpoint(folder / DELTA_FILE, ckpt.init, ckpt.final, {**meta, "export": export_info["base"]})
    atomic_write_text(folder / CONFIG_FILE, json.dumps(export_info, indent=2) + "\n")
    exported = Exported(
        folder=folder,
        delta=delta,
        merged=merged_path if want_merged else None,
        open_clip_name=oc_name if want_merged else None,
        force_quick_gelu=force_quick and want_merged,
        why_no_merged=why_not,
    )
    paths = [exported.merged, folder / OPEN_CLIP_CONFIG_FILE if want_merged else None, delta]
    files = {path.name: path.stat().st_size for path in paths if path is not None}
    if repo:  # on the Hub, open_clip fetches the merged file and its config by the repository's name
        lines = [f'open_clip.create_model("hf-hub:{repo}")'] if want_merged else []
    else:
        lines = exported.open_clip_lines()
    ref = f"hf-hub:{repo}" if repo else str(folder)
    card = model_card(meta, record, files, lines, why_not if merged is not False else None, ref)
    atomic_write_text(folder / CARD_FILE, card)
    return exported


@dataclass
class ExportFolder:
    """An export folder as :func:`read_export` found it."""

    folder: Path
    config: dict[str, Any]  # clipfit_config.json
    delta: Checkpoint | None  # the trained tensors and their metadata (None when the file is absent)
    merged: Path | None  # the merged open_clip weights, when present
    preprocess_cfg: dict[str, Any]  # open_clip's preprocess config of the merged model (empty without one)


def is_export(folder: str | Path) -> bool:
    """Whether ``folder`` holds a clipfit export (its clipfit_config.json)."""
    return (Path(folder).expanduser() / CONFIG_FILE).is_file()


def read_export(folder: str | Path) -> ExportFolder:
    """Read an export folder's configuration and delta (as data: JSON and safetensors, nothing unpickled)."""
    folder = Path(folder).expanduser()
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(
            f"{folder} is not a clipfit export: no {CONFIG_FILE} (write one with clipfit-export)"
        ) from None
    except json.JSONDecodeError as exc:
        raise ExportError(f"{folder / CONFIG_FILE} is not JSON: {exc}") from None
    if config.get("format") != FORMAT:
        raise ExportError(f"{folder / CONFIG_FILE} has format {config.get('format')!r}; this clipfit reads {FORMAT}")
    files = config.get("files") or {}
    delta_file = folder / (files.get("delta") or DELTA_FILE)
    merged_file = folder / files["merged"] if files.get("merged") else None
    delta = read_checkpoint(delta_file) if delta_file.is_file() else None
    merged = merged_file if merged_file is not None and merged_file.is_file() else None
    if delta is None and merged is None:
        raise ExportError(f"{folder} holds neither {DELTA_FILE} nor {MERGED_FILE}: an incomplete download?")
    preprocess: dict[str, Any] = {}
    if merged is not None and (folder / OPEN_CLIP_CONFIG_FILE).is_file():
        oc = json.loads((folder / OPEN_CLIP_CONFIG_FILE).read_text(encoding="utf-8"))
        preprocess = dict(oc.get("preprocess_cfg") or {})
    return ExportFolder(folder, config, delta, merged, preprocess)


def check_base(model: nn.Module, export: ExportFolder, pretrained: str) -> None:
    """Refuse a delta applied onto other pretrained weights than the ones it was trained from."""
    expected = (export.config.get("base") or {}).get("fingerprint")
    if expected is None or export.delta is None:
        return
    found = base_fingerprint(model, export.delta.names)
    if found != expected:
        base = export.config["base"]
        raise ExportError(
            f"the pretrained weights '{pretrained}' are not the ones the delta in {export.folder} was trained on "
            f"({base['model']} / {base['pretrained']}): applied onto them it would not be the fine-tuned model. "
            "Pass the weights the run used: clipfit.load(PATH, pretrained=FILE) or clipfit-predict --pretrained FILE"
        )
