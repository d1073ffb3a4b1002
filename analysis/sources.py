"""What clipfit-analyze is pointed at, loaded into one shape.

A *source* is a clipfit-train run directory (or its ``checkpoint.safetensors``), or a checkpoint
of the original CLIPFit code (Dassl format) together with ``--pretrained MODEL:SOURCE`` for the
values it started from. Either way the result is a :class:`clipfit.checkpoint.Checkpoint` whose
``init``/``final`` hold the recipe's tensors, so every analysis treats both alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from analysis.dassl import DasslCheckpoint, looks_like_dassl, read_dassl_checkpoint
from analysis.errors import AnalysisError
from clipfit.checkpoint import Checkpoint, CheckpointError
from clipfit.config import RunConfig, resolve
from clipfit.errors import ClipfitError
from clipfit.models import build_model
from clipfit.provenance import signature
from clipfit.recipes import select
from clipfit.rundir import RunDir, checkpoint_file, load_run

logger = logging.getLogger(__name__)

DASSL_KIND = "original CLIPFit (Dassl) checkpoint"


def parse_pretrained(value: str) -> tuple[str, str]:
    """``MODEL:SOURCE`` -> (model, source); the source may itself contain colons (``hf-hub:org/repo``)."""
    model, sep, source = value.partition(":")
    if not sep or not model or not source:
        raise AnalysisError(
            f"--pretrained expects MODEL:SOURCE, e.g. ViT-B-16:openai or ViT-B-16:/path/to/weights.pt; got {value!r}"
        )
    return model, source


@dataclass
class Source:
    """One checkpoint to analyse and where it came from."""

    path: Path  # what the user gave
    kind: str  # "clipfit run" or DASSL_KIND
    ckpt: Checkpoint  # init/final of the recipe's tensors; meta with model, pretrained, recipe, ...
    run_dir: Path | None = None  # the clipfit run directory (config.json, layers.jsonl, results.json)
    cfg: RunConfig | None = None  # the run's settings (clipfit runs only)
    notes: list[str] = field(default_factory=list)  # what a reader should know (e.g. stubbed classes)

    @property
    def signature(self) -> str:
        meta = self.ckpt.meta
        return meta.get("signature") or signature(
            meta.get("model", "?"),
            meta.get("pretrained", "?"),
            meta.get("recipe", "?"),
            meta.get("dataset") or "?",
            meta.get("seed") if meta.get("seed") is not None else "?",
            meta.get("activation"),
        )

    @property
    def layers_file(self) -> Path | None:
        """The run's per-step layer log, when there is one."""
        return RunDir(self.run_dir).layers_file if self.run_dir is not None else None

    @property
    def reg_weight(self) -> float | None:
        """The lambda the run's loss had (records of older versions resolved by today's rules)."""
        if self.cfg is None:
            return None
        try:
            return resolve(self.cfg).optim.reg_weight
        except ClipfitError:  # a record today's rules cannot resolve (e.g. a dataset no longer known)
            return self.cfg.optim.reg_weight


def load_source(path: str | Path, pretrained: str | None = None, recipe: str = "clipfit") -> Source:
    """Load a clipfit run/checkpoint, or an original CLIPFit checkpoint with its reference model.

    Args:
        path: run directory, ``checkpoint.safetensors``, Dassl ``model.pth.tar-<N>`` or its output folder.
        pretrained: ``MODEL:SOURCE`` of the pretrained model (required for Dassl checkpoints, which do
            not store their starting values; ignored for clipfit checkpoints, which do).
        recipe: the tensors a Dassl run trained (clipfit checkpoints record their recipe).

    Raises:
        CheckpointError: not a checkpoint, or a reference model the checkpoint does not fit.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"no such file or directory: {path}")
    if looks_like_dassl(path):
        if pretrained is None:
            raise CheckpointError(
                f"{path} is an {DASSL_KIND}, which does not store the pretrained values; "
                "pass --pretrained MODEL:SOURCE (e.g. ViT-B-16:openai, or ViT-B-16:~/.cache/clip/ViT-B-16.pt)"
            )
        return _dassl_source(path, read_dassl_checkpoint(path), *parse_pretrained(pretrained), recipe)
    if path.is_dir() and not checkpoint_file(path).is_file():
        raise CheckpointError(
            f"no checkpoint in {path}: expected a clipfit-train run directory (with checkpoint.safetensors) "
            "or an original CLIPFit output folder (prompt_learner/model.pth.tar-<epoch>)"
        )
    if pretrained is not None:
        logger.info("%s is a clipfit checkpoint with its own pretrained values; --pretrained is not needed", path)
    try:
        cfg, ckpt, run = load_run(path)
    except CheckpointError as exc:
        raise CheckpointError(
            f"{exc}. clipfit-analyze reads clipfit-train checkpoints and original CLIPFit (Dassl) checkpoints"
        ) from None
    if not ckpt.meta.get("complete", True):
        logger.warning(
            "%s is an unfinished run (epoch %s); analysing its last checkpoint", path, ckpt.meta.get("epoch")
        )
    # a bare checkpoint file carries no settings of its own: the analyses ask for --dataset, as for Dassl files
    return Source(path, "clipfit run", ckpt, run.path if run else None, cfg if run else None)


def _same_up_to_rounding(stored: torch.Tensor, reference: torch.Tensor) -> bool:
    """Equal up to rounding the reference to the stored precision (fp16 keeps 11 significant bits)."""
    if tuple(stored.shape) != tuple(reference.shape):
        return False
    return bool(torch.allclose(stored.float(), reference.float(), rtol=1e-3, atol=1e-5))


def _dassl_source(path: Path, dassl: DasslCheckpoint, model_name: str, source: str, recipe: str) -> Source:
    bundle = build_model(model_name, source, "cpu")
    params = {n: p.detach() for n, p in bundle.model.named_parameters()}
    names = select(bundle.model, recipe)
    reference = f"{model_name}:{source}"
    absent = [n for n in names if n not in dassl.tensors]
    if absent:
        raise CheckpointError(
            f"{dassl.path} does not fit {reference}: it has no '{absent[0]}' ({len(absent)} of the {len(names)} "
            f"tensors recipe '{recipe}' trains are absent); was it trained on another architecture?"
        )
    for name in names:
        if tuple(dassl.tensors[name].shape) != tuple(params[name].shape):
            raise CheckpointError(
                f"{dassl.path} does not fit {reference}: '{name}' is {tuple(dassl.tensors[name].shape)} in the "
                f"checkpoint and {tuple(params[name].shape)} in the model; pass the --pretrained the run started from"
            )
    foreign = [n for n in dassl.tensors if n not in params]
    if foreign:
        raise CheckpointError(
            f"{dassl.path} does not fit {reference}: the model has no '{foreign[0]}' "
            f"({len(foreign)} tensors of the checkpoint are unknown to it)"
        )
    trained = set(names)
    frozen = [n for n in dassl.tensors if n not in trained]
    differ = [n for n in frozen if not _same_up_to_rounding(dassl.tensors[n], params[n])]
    if differ:
        raise CheckpointError(
            f"{len(differ)} of the {len(frozen)} tensors outside recipe '{recipe}' in {dassl.path} differ from "
            f"{reference} by more than rounding (e.g. '{differ[0]}'): either {reference} is not the model the run "
            "started from (pass the right --pretrained) or the run trained other tensors (pass --recipe)"
        )
    # The run started from the reference rounded to the precision it stored (fp16 text biases).
    init = {n: params[n].to(dassl.tensors[n].dtype).float() for n in names}
    final = {n: dassl.tensors[n].float() for n in names}
    meta = {
        "model": model_name,
        "pretrained": source,
        "activation": bundle.activation,
        "recipe": recipe,
        "dataset": None,
        "seed": None,
        "epoch": dassl.epoch,
        "source": DASSL_KIND,
        "file": str(dassl.path),
        "stored_dtypes": sorted({str(dassl.tensors[n].dtype).replace("torch.", "") for n in names}),
        "trained": names,
    }
    notes = []
    if dassl.stubbed:
        notes.append(f"not executed (read as inert stubs): {', '.join(sorted(dassl.stubbed))}")
    logger.info(
        "%s: %s, epoch %s, %d trained tensors compared with %s",
        dassl.path,
        DASSL_KIND,
        dassl.epoch,
        len(names),
        reference,
    )
    return Source(path, DASSL_KIND, Checkpoint(init=init, final=final, meta=meta), notes=notes)


def default_labels(sources: list[Source]) -> list[str]:
    """Short distinct labels: the recipe for one source; otherwise lambda values when they differ,
    else the path components that differ between the sources."""
    if len(sources) == 1:
        return [sources[0].ckpt.meta.get("recipe") or "checkpoint"]
    weights = [s.reg_weight for s in sources]
    if None not in weights and len(set(weights)) == len(weights):
        return [f"λ={w:g}" for w in weights]
    parts = [s.path.resolve().parts[::-1] for s in sources]
    depth = max(len(p) for p in parts)
    keep = [i for i in range(depth) if len({p[i] if i < len(p) else "" for p in parts}) > 1]
    labels = [
        "/".join(p[i] for i in reversed(keep) if i < len(p)) or str(s.path) for p, s in zip(parts, sources, strict=True)
    ]
    return labels if len(set(labels)) == len(labels) else [str(s.path) for s in sources]
