"""The training loop: schedule, precision, distributed data parallelism, logs and checkpoints.

One step: the image features of the batch and the text features of *every* class of the label
space (one text pass, on sequences cut to the longest prompt), the ClipFit loss with the
regulariser against ``t0`` (computed once, before the first step, from the frozen pretrained
model: no second model copy), SGD on the trained tensors only.

Schedule (PAPER.md section 3, as Dassl's ConstantWarmupScheduler + CosineAnnealingLR do it):
epoch ``e < warmup_epochs`` runs at ``warmup_lr``; afterwards
``lr(e) = 0.5 * lr * (1 + cos(pi * (e - warmup_epochs) / epochs))``, stepped per epoch.

At the end of every epoch the checkpoint (trained tensors, optimizer buffers, generator states,
epoch) is written atomically; :meth:`Trainer.fit` given that checkpoint continues the run and ends
with the same tensors, bit for bit on CPU, because every batch and augmentation is a function of
(seed, epoch, position) alone (see :class:`clipfit.data.loaders.EpochBatches`).

Speed options (results-neutral): activation checkpointing of the text and/or image tower's blocks
(:func:`set_grad_checkpointing`; the text tower carries every class through every step, so its
activations grow with the class count) and ``torch.compile`` of the training forward, which falls
back to eager execution with a warning where it cannot compile. Under torchrun the forward is
wrapped in DistributedDataParallel (:func:`clipfit.runtime.wrap_ddp`), which all-reduces only the
trained tensors' gradients; logged losses and accuracies are reduced over all processes.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from clipfit.checkpoint import Checkpoint, atomic_write_text, rng_state, save_checkpoint, set_rng_state
from clipfit.config import OptimConfig
from clipfit.data.base import ImageReader, Sample
from clipfit.data.loaders import AugmentedImages, EpochBatches, decode_images
from clipfit.errors import ConfigError
from clipfit.heads import ClipHead
from clipfit.layers import describe
from clipfit.losses import LossParts, clipfit_loss
from clipfit.models import PreprocessSpec
from clipfit.prompts import class_tokens
from clipfit.runtime import DistEnv, all_reduce_sum, autocast, ddp_summary, grad_scaler, wrap_ddp
from clipfit.text import text_module

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
LAYERS_FILE = "layers.jsonl"
GRAD_CHECKPOINTING = ("text", "image", "all")  # which towers recompute their blocks' activations in backward


def lr_at_epoch(epoch: int, optim: OptimConfig) -> float:
    """The learning rate of an epoch (0-based) under warm-up + per-epoch cosine."""
    if epoch < optim.warmup_epochs:
        return optim.warmup_lr
    return 0.5 * optim.lr * (1.0 + math.cos(math.pi * (epoch - optim.warmup_epochs) / optim.epochs))


@dataclass
class TrainTask:
    """What to train on: the few-shot images, relabelled to the training label space."""

    samples: list[Sample]
    classnames: Sequence[str]
    template: str
    reader: ImageReader
    crop_scale: tuple[float, float]


@dataclass
class FitResult:
    epochs: int  # epochs finished
    steps: int  # optimisation steps finished
    train_seconds: float  # wall time spent in fit (this call plus earlier, resumed calls)
    last: dict[str, float] = field(default_factory=dict)  # last epoch's mean loss, ce, reg, acc


class _Forward(nn.Module):
    """One module for DistributedDataParallel to wrap: images + class inputs -> normalised features."""

    def __init__(
        self, model: nn.Module, head: ClipHead, image_trainable: bool, fixed_text: torch.Tensor | None
    ) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.image_trainable = image_trainable
        self.fixed_text = fixed_text

    def forward(self, images: torch.Tensor, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.set_grad_enabled(self.image_trainable and torch.is_grad_enabled()):
            image = F.normalize(self.head.encode_images(self.model, images), dim=-1)
        if self.fixed_text is not None:
            return image, self.fixed_text
        return image, F.normalize(self.head.encode_classes(self.model, inputs), dim=-1)


def set_grad_checkpointing(model: nn.Module, towers: str | None) -> None:
    """Activation checkpointing of the transformer blocks of ``towers`` (``text``, ``image``, ``all``;
    None turns it off everywhere).

    open_clip checkpoints each residual block non-reentrantly, so gradients still reach trained
    tensors inside blocks whose inputs need no gradient (frozen embeddings), and the recomputed
    forward gives the same values.
    """
    text_on = towers in ("text", "all")
    image_on = towers in ("image", "all")
    if towers is not None and towers not in GRAD_CHECKPOINTING:
        raise ConfigError(f"unknown grad checkpointing '{towers}'; expected one of {', '.join(GRAD_CHECKPOINTING)}")
    text = text_module(model)
    if text is not None and hasattr(text, "transformer"):
        text.transformer.grad_checkpointing = text_on
    elif text_on:
        raise ConfigError(f"{type(model).__name__}'s text tower does not support activation checkpointing here")
    visual = getattr(model, "visual", None)
    transformer = getattr(visual, "transformer", None)
    if transformer is not None and hasattr(transformer, "grad_checkpointing"):
        transformer.grad_checkpointing = image_on
    elif image_on:
        raise ConfigError(
            f"the image tower ({type(visual).__name__}) has no transformer blocks to checkpoint; "
            "use --grad-checkpointing text"
        )


def train_mode(model: nn.Module) -> None:
    """Training mode with every BatchNorm left in eval mode (ResNet towers).

    The pretrained running statistics stay as they are: few-shot batches are too small to
    re-estimate them, the checkpoint holds only trained tensors (so moved statistics would be lost
    at evaluation and on resume), and under DDP each process would move its own. BatchNorm affine
    parameters are still trained by the recipes that select them.
    """
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _compile_blocker(device: torch.device) -> str | None:
    """Why torch.compile cannot run here, or None when it should."""
    try:
        import torch._dynamo
    except Exception as exc:  # pragma: no cover - torch builds without dynamo
        return f"torch.compile is unavailable in this torch build ({exc})"
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python version"
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "clang++", "c++", "cl")):
        return "torch.compile on CPU needs a C++ compiler (g++ or clang++) and none was found"
    return None


@dataclass
class StepState:
    """Everything one optimisation step uses, built once by :meth:`Trainer.prepare`."""

    forward: nn.Module  # _Forward, possibly DDP-wrapped and compiled
    eager: nn.Module | None  # the uncompiled forward while a compiled one has not yet finished a step
    inputs: torch.Tensor  # class inputs of the label space (token ids cut to the longest prompt)
    t0: torch.Tensor | None  # pretrained text features (None without regulariser)
    reg_weight: float  # lambda, 0 when the regulariser is off
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    init: dict[str, torch.Tensor]  # pretrained values of the trained tensors
    ddp_reported: bool = False  # DDP's bucket summary logged


class JsonlWriter:
    """Appends JSON lines (only on the main process); can drop records past a step on resume."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self.path is None or not rows:
            return
        with self.path.open("a") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)

    def truncate_after(self, step: int) -> None:
        """Remove records written after ``step`` (by an epoch that crashed before its checkpoint)."""
        if self.path is None or not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))


class Trainer:
    """Fine-tunes the trained tensors of ``model`` (already frozen by a recipe) on a task."""

    def __init__(
        self,
        model: nn.Module,
        trained: Sequence[str],
        tokenizer: Callable[..., torch.Tensor],
        spec: PreprocessSpec,
        task: TrainTask,
        optim: OptimConfig,
        *,
        seed: int,
        device: torch.device,
        precision: str = "fp32",
        env: DistEnv = DistEnv(),
        run_dir: Path | None = None,
        log_every: int = 10,
        num_workers: int = 0,
        checkpoint_meta: dict[str, Any] | None = None,
        head: ClipHead | None = None,
        compile: bool = False,
        grad_checkpointing: str | None = None,
        checkpoint_every: int = 1,
    ) -> None:
        self.model, self.trained, self.tokenizer, self.spec, self.task = model, list(trained), tokenizer, spec, task
        self.compile, self.grad_checkpointing = compile, grad_checkpointing
        self.optim, self.seed, self.device, self.precision, self.env = optim, seed, device, precision, env
        self.run_dir = run_dir if env.is_main else None
        self.log_every, self.num_workers = log_every, num_workers
        self.checkpoint_every = checkpoint_every
        self.checkpoint_meta = dict(checkpoint_meta or {})
        self.head = head or ClipHead()
        unresolved = [k for k in ("lr", "epochs", "reg_weight") if getattr(optim, k) is None]
        if unresolved:
            raise ConfigError(f"optimiser settings {unresolved} are unset: resolve the config (clipfit.config.resolve)")
        params = dict(model.named_parameters())
        missing = [n for n in self.trained if n not in params or not params[n].requires_grad]
        if missing:
            raise ValueError(f"trained tensors not found or frozen in the model: {missing[:5]}")
        self.params = [params[n] for n in self.trained]
        self.metrics = JsonlWriter(self.run_dir / METRICS_FILE if self.run_dir else None)
        self.layers = JsonlWriter(self.run_dir / LAYERS_FILE if self.run_dir else None)

    # ------------------------------------------------------------------ setup

    def _loader(self) -> tuple[DataLoader, EpochBatches]:
        images = decode_images(self.task.samples, self.task.reader, self.spec, self.num_workers)
        dataset = AugmentedImages(images, [s.label for s in self.task.samples], self.spec, self.task.crop_scale)
        sampler = EpochBatches(
            len(dataset), self.optim.batch_size, self.seed, rank=self.env.rank, world_size=self.env.world_size
        )
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=self.num_workers)
        return loader, sampler

    @torch.no_grad()
    def _class_features(self, head: ClipHead, inputs: torch.Tensor) -> torch.Tensor:
        """Normalised class features of the model as it is now, through ``head``."""
        was_training = self.model.training
        self.model.eval()
        with autocast(self.device, self.precision):
            features = F.normalize(head.encode_classes(self.model, inputs).float(), dim=-1)
        if was_training:
            train_mode(self.model)
        return features

    # ------------------------------------------------------------------ one step

    def prepare(self) -> StepState:
        """Class inputs, ``t0``, the (DDP-wrapped, compiled) forward and the optimizer.

        Must run while the model holds its pretrained values (also when resuming): ``t0`` and the
        initial values of the trained tensors are taken here.
        """
        model, optim = self.model, self.optim
        set_grad_checkpointing(model, self.grad_checkpointing)
        inputs = self.head.class_inputs(self.tokenizer, model, self.task.template, self.task.classnames)
        inputs = inputs.to(self.device)
        init = {n: p.detach().clone() for n, p in zip(self.trained, self.params, strict=True)}
        towers = {describe(n).tower for n in self.trained}
        text_trained = bool(towers & {"text", "prompt"})
        image_trained = bool(towers & {"image", "adapter"})
        use_reg = optim.reg_weight > 0 and text_trained
        # t0: the pretrained model's features of the dataset's template prompts.
        t0 = None
        if use_reg:
            template_tokens = class_tokens(self.tokenizer, model, self.task.template, self.task.classnames)
            t0 = self._class_features(ClipHead(), template_tokens.to(self.device))
        # Without trained text tensors the class features never change: compute them once.
        fixed_text = None if text_trained else self._class_features(self.head, inputs)
        forward: nn.Module = _Forward(model, self.head, image_trained, fixed_text)
        if self.env.distributed:
            forward = wrap_ddp(forward, self.device)
        eager = None
        if self.compile:
            blocker = _compile_blocker(self.device)
            if blocker:
                logger.warning("--compile: %s; training without torch.compile", blocker)
            else:
                eager, forward = forward, torch.compile(forward)
        optimizer = torch.optim.SGD(self.params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
        scaler = grad_scaler(self.device, self.precision)
        reg_weight = optim.reg_weight if use_reg else 0.0
        return StepState(forward, eager, inputs, t0, reg_weight, optimizer, scaler, init)

    def train_step(
        self, state: StepState, images: torch.Tensor, labels: torch.Tensor, global_batch: int | None = None
    ) -> tuple[LossParts, torch.Tensor]:
        """One SGD step on a batch (this process's part of it under torchrun).

        ``global_batch`` is the size of the batch over all processes (known from the sampler, so no
        collective call is needed for it); without it, ``len(labels)`` times the world size.
        Returns the loss parts and the squared gradient norm of every trained tensor (after the
        all-reduce, so the same on every process).
        """
        if state.eager is None:
            return self._step(state, images, labels, global_batch)
        try:  # the first compiled step compiles forward and backward; any failure falls back to eager
            result = self._step(state, images, labels, global_batch)
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if self.env.distributed:
                # One process falling back alone (or after some DDP hooks fired) would leave the others
                # out of step in the all-reduce: stop the job instead; it resumes with --no-compile.
                raise ConfigError(
                    f"--compile: torch.compile failed on process {self.env.rank} ({type(exc).__name__}: "
                    f"{first_line}); under torchrun there is no eager fallback: resume with --no-compile"
                ) from exc
            logger.warning(
                "--compile: torch.compile failed (%s: %s); training without it", type(exc).__name__, first_line
            )
            state.optimizer.zero_grad(set_to_none=True)
            state.forward = state.eager
            state.eager = None
            return self._step(state, images, labels, global_batch)
        state.eager = None
        return result

    def _step(
        self, state: StepState, images: torch.Tensor, labels: torch.Tensor, global_batch: int | None
    ) -> tuple[LossParts, torch.Tensor]:
        normaliser = None
        if self.env.distributed:
            # DDP averages gradients over processes: each divides its summed cross-entropy by its
            # share of the global batch, so the average is the single-process mean.
            normaliser = (global_batch or len(labels) * self.env.world_size) / self.env.world_size
        with autocast(self.device, self.precision):
            image_features, text_features = state.forward(images, state.inputs)
        parts = clipfit_loss(
            image_features,
            text_features,
            labels,
            self.model.logit_scale,
            state.t0,
            state.reg_weight,
            ce_normaliser=normaliser,
        )
        optimizer, scaler = state.optimizer, state.scaler
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(parts.loss).backward()
            scaler.unscale_(optimizer)
        else:
            parts.loss.backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        grad_sq = torch.stack(torch._foreach_norm(grads)).double().pow(2)
        if scaler is not None:
            # fp16: a step whose gradients overflowed is skipped by the scaler; it moved nothing, so it
            # adds nothing to the squared-gradient sums (inf/NaN would poison them for the whole run)
            grad_sq = torch.where(torch.isfinite(grad_sq).all(), grad_sq, torch.zeros_like(grad_sq))
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if self.env.distributed and not state.ddp_reported:
            state.ddp_reported = True
            ddp = getattr(state.forward, "_orig_mod", state.forward)
            logger.debug("DDP over %d processes all-reduces: %s", self.env.world_size, ddp_summary(ddp))
        return parts, grad_sq

    # ------------------------------------------------------------------ fit

    def fit(self, resume: Checkpoint | None = None) -> FitResult:
        """Train to ``optim.epochs``; continue from ``resume`` (a checkpoint of this run) if given."""
        model, optim = self.model, self.optim
        state = self.prepare()
        optimizer, init = state.optimizer, state.init
        start_epoch, step, elapsed = 0, 0, 0.0
        grad_sq_cum = torch.zeros(len(self.params), device=self.device, dtype=torch.float64)
        if resume is not None:
            start_epoch, step, elapsed = self._restore(resume, optimizer, init, grad_sq_cum, state.scaler)
            self.metrics.truncate_after(step)
            self.layers.truncate_after(step)

        loader, sampler = self._loader()
        train_mode(model)
        last: dict[str, float] = {}
        started = time.time()
        bar = tqdm(
            total=optim.epochs,
            initial=start_epoch,
            desc="train",
            unit="epoch",
            disable=None if self.env.is_main else True,
        )
        try:
            for epoch in range(start_epoch, optim.epochs):
                lr = lr_at_epoch(epoch, optim)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                sampler.set_epoch(epoch)
                window = torch.zeros(
                    6, device=self.device, dtype=torch.float64
                )  # loss, ce, reg, correct, images, steps
                epoch_sum = torch.zeros(6, device=self.device, dtype=torch.float64)
                for images, labels in loader:
                    images, labels = images.to(self.device, non_blocking=True), labels.to(self.device)
                    parts, grad_sq = self.train_step(state, images, labels, sampler.global_batch_size)
                    grad_sq_cum += grad_sq
                    step += 1
                    stats = torch.stack(
                        [
                            parts.loss.detach().double(),
                            parts.ce.double(),
                            parts.reg.double(),
                            parts.logits.argmax(1).eq(labels).sum().double(),
                            torch.tensor(float(len(labels)), device=self.device, dtype=torch.float64),
                            torch.ones((), device=self.device, dtype=torch.float64),
                        ]
                    )
                    window += stats
                    epoch_sum += stats
                    if step % self.log_every == 0:
                        self._log_step(step, epoch, lr, window, grad_sq, grad_sq_cum, init)
                        window.zero_()
                if window[5] > 0:  # the epoch's last steps since the previous record
                    self._log_step(step, epoch, lr, window, grad_sq, grad_sq_cum, init)
                last = self._means(self._global(epoch_sum))
                elapsed_now = elapsed + time.time() - started
                if (epoch + 1) % self.checkpoint_every == 0 or epoch + 1 == optim.epochs:
                    self._checkpoint(epoch + 1, step, elapsed_now, init, optimizer, grad_sq_cum, state.scaler)
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['acc']:.1f}")
                milestone = epoch + 1 in (1, optim.epochs) or (epoch + 1) % max(1, optim.epochs // 10) == 0
                logger.log(
                    logging.INFO if milestone else logging.DEBUG,  # the console shows ~10 epochs, log.txt all
                    "epoch %d/%d lr %.2e loss %.4f ce %.4f reg %.5f acc %.1f%%",
                    epoch + 1,
                    optim.epochs,
                    lr,
                    last["loss"],
                    last["ce"],
                    last["reg"],
                    last["acc"],
                )
        finally:
            bar.close()
            if self.grad_checkpointing:
                set_grad_checkpointing(model, None)
        return FitResult(epochs=optim.epochs, steps=step, train_seconds=elapsed + time.time() - started, last=last)

    # ------------------------------------------------------------------ logs and checkpoints

    def _global(self, sums: torch.Tensor) -> torch.Tensor:
        """Stats summed on this process -> the same stats over all processes (a collective call).

        Each process's loss, ce and reg are already shares of the global batch's means (see
        ``ce_normaliser``), so their sums over processes are divided by the world size, like the
        step count; correct predictions and images add up.
        """
        if not self.env.distributed:
            return sums
        total = all_reduce_sum(sums.clone())
        total[[0, 1, 2, 5]] /= self.env.world_size
        return total

    @staticmethod
    def _means(sums: torch.Tensor) -> dict[str, float]:
        """Per-step means of loss, ce and reg, and the accuracy over the images, of summed stats."""
        loss, ce, reg, correct, images, steps = sums.tolist()
        steps, images = max(steps, 1.0), max(images, 1.0)
        return {"loss": loss / steps, "ce": ce / steps, "reg": reg / steps, "acc": 100.0 * correct / images}

    def _log_step(self, step, epoch, lr, window, grad_sq, grad_sq_cum, init) -> None:
        window = self._global(window)  # every process takes part, only the main one writes
        if self.run_dir is None:
            return
        means = self._means(window)
        self.metrics.write([{"step": step, "epoch": epoch, "lr": lr, **{k: round(v, 6) for k, v in means.items()}}])
        with torch.no_grad():
            change = torch.stack(
                [
                    (p.detach().float() - init[n].float()).pow(2).sum()
                    for n, p in zip(self.trained, self.params, strict=True)
                ]
            ).tolist()
        rows = []
        for name, sq_change, gsq, gcum in zip(
            self.trained, change, grad_sq.tolist(), grad_sq_cum.tolist(), strict=True
        ):
            rows.append(
                {
                    "step": step,
                    "epoch": epoch,
                    **describe(name).columns(),
                    "sq_change": sq_change,
                    "grad_sq": gsq,
                    "grad_sq_cum": gcum,
                }
            )
        self.layers.write(rows)

    def _checkpoint(self, epoch, step, elapsed, init, optimizer, grad_sq_cum, scaler=None) -> None:
        if self.run_dir is None:
            return
        state = optimizer.state_dict()["state"]
        buffers = {
            name: {k: v for k, v in state.get(i, {}).items() if isinstance(v, torch.Tensor)}
            for i, name in enumerate(self.trained)
        }
        meta = {
            **self.checkpoint_meta,
            "epoch": epoch,
            "epochs": self.optim.epochs,
            "step": step,
            "complete": False,
            "train_seconds": round(elapsed, 3),
            "grad_sq_cum": grad_sq_cum.tolist(),
        }
        if scaler is not None:  # fp16: the loss scale and its growth tracker, so a resumed run scales alike
            scaler_state = scaler.state_dict()
            meta["grad_scaler"] = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in scaler_state.items()}
        final = {n: p for n, p in zip(self.trained, self.params, strict=True)}
        save_checkpoint(self.run_dir, init, final, meta, optim=buffers, rng=rng_state())

    def _restore(self, ckpt: Checkpoint, optimizer, init, grad_sq_cum, scaler=None) -> tuple[int, int, float]:
        if list(ckpt.final) != self.trained and set(ckpt.final) != set(self.trained):
            raise ValueError("the checkpoint trains other tensors than this run's recipe")
        with torch.no_grad():
            for name, param in zip(self.trained, self.params, strict=True):
                if not torch.equal(ckpt.init[name].to(param.device, param.dtype), init[name]):
                    raise ValueError(
                        f"the checkpoint's initial value of {name} differs from the model's pretrained value: "
                        "the run was started from other weights"
                    )
                param.copy_(ckpt.final[name].to(param.device, param.dtype))
        state = {
            "state": {
                i: {k: v.to(self.device) for k, v in ckpt.optim.get(name, {}).items()}
                for i, name in enumerate(self.trained)
                if ckpt.optim.get(name)
            },
            "param_groups": optimizer.state_dict()["param_groups"],
        }
        optimizer.load_state_dict(state)
        set_rng_state(ckpt.rng)
        if "grad_sq_cum" in ckpt.meta:
            grad_sq_cum.copy_(torch.tensor(ckpt.meta["grad_sq_cum"], dtype=torch.float64))
        if scaler is not None and ckpt.meta.get("grad_scaler"):
            scaler.load_state_dict(ckpt.meta["grad_scaler"])
        logger.info("resuming after epoch %d (step %d)", ckpt.meta["epoch"], ckpt.meta["step"])
        return int(ckpt.meta["epoch"]), int(ckpt.meta["step"]), float(ckpt.meta.get("train_seconds", 0.0))
