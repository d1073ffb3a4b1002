"""What clipfit-analyze is pointed at, loaded into one shape.

A *source* is a clipfit-train run directory (or its ``checkpoint.safetensors``), a checkpoint
of the original CLIPFit code (Dassl format) together with ``--pretrained MODEL:SOURCE`` for the
values it started from, or two weight files of one open_clip architecture (``--weights ARCH:A
ARCH:B``: a full fine-tune, a WiSE-FT interpolation, one pretrained source against another).
Either way the result is a :class:`clipfit.checkpoint.Checkpoint` whose ``init``/``final`` hold the
compared tensors (the recipe's; for two weight files every parameter, A as ``init`` and B as
``final``), so every analysis treats them alike. A sweep directory stands for every run under it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from analysis.configs import configuration_labels
from analysis.dassl import DasslCheckpoint, looks_like_dassl, read_dassl_checkpoint
from analysis.errors import AnalysisError
from clipfit.checkpoint import Checkpoint, CheckpointError
from clipfit.config import RunConfig, flatten_settings, resolve
from clipfit.errors import ClipfitError
from clipfit.models import build_model
from clipfit.provenance import signature
from clipfit.recipes import select
from clipfit.rundir import CHECKPOINT_FILE, EVAL_DIR, METRICS_FILE, RESULT_NEUTRAL, RunDir, checkpoint_file, load_run

logger = logging.getLogger(__name__)

DASSL_KIND = "original CLIPFit (Dassl) checkpoint"
WEIGHTS_KIND = "two open_clip weight files"


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
    label: str | None = None  # its name in figures when nothing else names it (two weight files: "A → B")

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
    def metrics_file(self) -> Path | None:
        """The run's metrics.jsonl (loss, accuracy per logged step), when there is one."""
        path = self.run_dir / METRICS_FILE if self.run_dir is not None else None
        return path if path is not None and path.is_file() else None

    @property
    def settings(self) -> dict[tuple[str, ...], Any]:
        """What the run's result depends on, flattened (:mod:`analysis.configs`), with the lambda its loss had."""
        meta = self.ckpt.meta
        if self.cfg is None:  # a bare checkpoint, a Dassl file or two weight files: each is its own configuration
            flat = {("recipe",): meta.get("recipe"), ("model", "name"): meta.get("model")}
            flat[("model", "pretrained")] = meta.get("pretrained")
            flat[("file",)] = meta.get("compared") or meta.get("file") or str(self.path)
            return flat
        flat = flatten_settings(self.cfg.to_dict())
        flat[("optim", "reg_weight")] = self.reg_weight
        flat[("precision",)] = meta.get("precision", flat.get(("precision",)))
        return flat

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
    """Short distinct labels: the recipe for one source; otherwise lambda values when they differ, else the
    configuration (with ``s<seed>`` where seeds share one), else the path components that differ."""
    if len(sources) == 1:
        return [sources[0].label or sources[0].ckpt.meta.get("recipe") or "checkpoint"]
    weights = [s.reg_weight for s in sources]
    if None not in weights and len(set(weights)) == len(weights):
        return [f"λ={w:g}" for w in weights]
    named = configurations(sources)
    seeds = [s.ckpt.meta.get("seed") for s in sources]
    named = [f"{c} s{seed}" if named.count(c) > 1 else c for c, seed in zip(named, seeds, strict=True)]
    if len(set(named)) == len(named):
        return named
    parts = [s.path.resolve().parts[::-1] for s in sources]
    depth = max(len(p) for p in parts)
    keep = [i for i in range(depth) if len({p[i] if i < len(p) else "" for p in parts}) > 1]
    labels = [
        "/".join(p[i] for i in reversed(keep) if i < len(p)) or str(s.path) for p, s in zip(parts, sources, strict=True)
    ]
    return labels if len(set(labels)) == len(labels) else [str(s.path) for s in sources]


def weights_source(first: str, second: str) -> Source:
    """Two weight files of one open_clip architecture as a source: ``init`` = every parameter of the first,
    ``final`` = the same parameters of the second.

    Each argument is ``ARCH:FILE`` (an open_clip state dict in safetensors or ``torch.save`` format, an OpenAI
    TorchScript archive) or ``ARCH:TAG`` (an open_clip pretrained tag). Files are read as data by
    :func:`clipfit.archives.read_weights` (through :func:`clipfit.models.build_model`, which also converts
    open_clip's layouts and refuses weights that do not fit the architecture); nothing is unpickled.

    Raises:
        CheckpointError: the two do not have the same parameters (names and shapes).
    """
    (arch_a, file_a), (arch_b, file_b) = parse_pretrained(first), parse_pretrained(second)
    a = build_model(arch_a, file_a, "cpu")
    init = {n: p.detach().clone() for n, p in a.model.named_parameters()}
    activation, source_a = a.activation, a.source
    del a
    b = build_model(arch_b, file_b, "cpu")
    final = {n: p.detach().clone() for n, p in b.model.named_parameters()}
    notes = [f"A = {source_a} ({arch_a}), B = {b.source} ({arch_b}); every parameter compared, A as the start"]
    if b.activation != activation:
        notes.append(f"B's tensors run in A's network ({activation} activation; B's architecture uses {b.activation})")
    del b
    absent = [n for n in init if n not in final] + [n for n in final if n not in init]
    differ = [n for n in init if n in final and tuple(init[n].shape) != tuple(final[n].shape)]
    if absent or differ:
        what = f"'{absent[0]}' is in one only" if absent else f"'{differ[0]}' differs in shape"
        raise CheckpointError(
            f"{first} and {second} are not weights of one architecture: {what} "
            f"({len(absent)} names in one only, {len(differ)} shapes differ)"
        )
    compared = f"{file_a} -> {file_b}"
    meta = {
        "model": arch_a,
        "pretrained": file_a,
        "activation": activation,
        "recipe": "full",  # every parameter may have moved
        "dataset": None,
        "seed": None,
        "source": WEIGHTS_KIND,
        "compared": compared,
        "trained": list(final),
        "signature": signature(arch_a, compared, "weights", "?", "?", activation),
    }
    label = f"{Path(file_a).name} → {Path(file_b).name}"
    return Source(Path(file_b), WEIGHTS_KIND, Checkpoint(init=init, final=final, meta=meta), notes=notes, label=label)


def find_runs(paths: Sequence[str | Path]) -> list[str]:
    """``paths`` with every folder that is not itself a run (no checkpoint, not a Dassl output) replaced by the
    clipfit runs under it (a sweep: every ``checkpoint.safetensors`` found recursively, outside ``eval/``; sorted,
    each once)."""
    found: list[str] = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.is_dir() or checkpoint_file(path).is_file() or looks_like_dassl(path):
            found.append(str(given))  # as given, even twice (a run compared with itself)
            continue
        runs = sorted(f.parent for f in path.rglob(CHECKPOINT_FILE) if EVAL_DIR not in f.relative_to(path).parts)
        if not runs:  # none under it: as given, so load_source says what it lacks
            found.append(str(given))
            continue
        found += [str(r) for r in runs if str(r) not in found]  # runs an earlier argument named: once
    return found


def configurations(sources: Sequence[Source]) -> list[str]:
    """One configuration label per source (:func:`analysis.configs.configuration_labels`); runs differing only
    in their seed share one. Two weight files are labelled by their file names."""
    labels = configuration_labels([s.settings for s in sources], set(RESULT_NEUTRAL))
    return [s.label or label for s, label in zip(sources, labels, strict=True)]
