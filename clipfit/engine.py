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
(:func:`clipfit.towers.set_grad_checkpointing`; the text tower carries every class through every step, so its
activations grow with the class count) and ``torch.compile`` of the training forward, which falls
back to eager execution with a warning where it cannot compile. Under torchrun the forward is
wrapped in DistributedDataParallel (:func:`clipfit.runtime.wrap_ddp`), which all-reduces only the
trained tensors' gradients; logged losses and accuracies are reduced over all processes.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from clipfit.checkpoint import Checkpoint, rng_state, set_rng_state
from clipfit.config import OptimConfig, RunConfig
from clipfit.data.base import ImageReader, Sample
from clipfit.data.loaders import TrainBatches
from clipfit.errors import ConfigError
from clipfit.heads import ClipHead
from clipfit.layers import describe
from clipfit.models import ModelBundle
from clipfit.objective import LossParts, Objective, StepStats
from clipfit.rundir import LAYERS_FILE, METRICS_FILE, JsonlLog, RunDir
from clipfit.runtime import DistEnv, autocast, ddp_summary, grad_scaler, wrap_ddp
from clipfit.towers import set_grad_checkpointing, train_mode

logger = logging.getLogger(__name__)


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
    cache: str = "none"  # where views are cropped from: the full-size images, or a crop-size copy (TRAIN_CACHES)


@dataclass
class TrainSettings:
    """How to train: the optimiser and schedule, and the options that never change what is trained."""

    optim: OptimConfig  # resolved (lr, epochs and reg_weight set)
    seed: int  # batches and augmentation
    device: torch.device
    precision: str = "fp32"  # fp32, bf16 or fp16 autocast
    log_every: int = 10  # steps between metrics.jsonl / layers.jsonl records
    num_workers: int = 0  # DataLoader workers decoding the training images
    compile: bool = False  # torch.compile the training forward
    grad_checkpointing: str | None = None  # text, image or all: recompute block activations in backward
    checkpoint_every: int = 1  # epochs between resumable checkpoints (the last epoch always writes one)

    @classmethod
    def of(cls, cfg: RunConfig, device: torch.device, precision: str, num_workers: int) -> TrainSettings:
        """The settings of a resolved run configuration."""
        return cls(
            optim=cfg.optim,
            seed=cfg.seed,
            device=device,
            precision=precision,
            log_every=cfg.log_every,
            num_workers=num_workers,
            compile=cfg.compile,
            grad_checkpointing=cfg.grad_checkpointing,
            checkpoint_every=cfg.checkpoint_every,
        )


@dataclass
class FitResult:
    epochs: int  # epochs finished
    steps: int  # optimisation steps finished
    train_seconds: float  # wall time spent in fit (this call plus earlier, resumed calls)
    last: dict[str, float] = field(default_factory=dict)  # last epoch's mean loss, ce, reg, acc


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

    objective: Objective  # features and loss of the label space (t0, lambda, class inputs)
    forward: nn.Module  # the objective, possibly DDP-wrapped and compiled
    eager: nn.Module | None  # the uncompiled forward while a compiled one has not yet finished a step
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    init: dict[str, torch.Tensor]  # pretrained values of the trained tensors
    ddp_reported: bool = False  # DDP's bucket summary logged


class Trainer:
    """Fine-tunes the trained tensors of a model (already frozen by a recipe) on a task."""

    def __init__(
        self,
        bundle: ModelBundle,
        trained: Sequence[str],
        task: TrainTask,
        settings: TrainSettings,
        *,
        env: DistEnv = DistEnv(),
        run_dir: RunDir | None = None,
        checkpoint_meta: dict[str, Any] | None = None,
    ) -> None:
        self.model, self.bundle, self.trained, self.task = bundle.model, bundle, list(trained), task
        self.settings, self.optim, self.device, self.env = settings, settings.optim, settings.device, env
        self.head = bundle.head or ClipHead()
        self.run_dir = run_dir if run_dir is not None and env.is_main else None
        self.checkpoint_meta = dict(checkpoint_meta or {})
        unresolved = [k for k in ("lr", "epochs", "reg_weight") if getattr(self.optim, k) is None]
        if unresolved:
            raise ConfigError(f"optimiser settings {unresolved} are unset: resolve the config (clipfit.config.resolve)")
        params = dict(self.model.named_parameters())
        missing = [n for n in self.trained if n not in params or not params[n].requires_grad]
        if missing:
            raise ValueError(f"trained tensors not found or frozen in the model: {missing[:5]}")
        self.params = [params[n] for n in self.trained]
        self.metrics = self.run_dir.log(METRICS_FILE) if self.run_dir else JsonlLog(None)
        self.layers = self.run_dir.log(LAYERS_FILE) if self.run_dir else JsonlLog(None)

    # ------------------------------------------------------------------ one step

    def prepare(self) -> StepState:
        """The objective (class inputs, ``t0``), the (DDP-wrapped, compiled) forward and the optimizer.

        Must run while the model holds its pretrained values (also when resuming): ``t0`` and the
        initial values of the trained tensors are taken here.
        """
        model, optim, settings = self.model, self.optim, self.settings
        set_grad_checkpointing(model, settings.grad_checkpointing)
        init = {n: p.detach().clone() for n, p in zip(self.trained, self.params, strict=True)}
        objective = Objective.build(
            model, self.head, self.bundle.tokenizer, self.task.template, self.task.classnames, self.trained,
            optim.reg_weight, self.device, settings.precision,
        )  # fmt: skip
        forward: nn.Module = objective
        if self.env.distributed:
            forward = wrap_ddp(forward, self.device)
        eager = None
        if settings.compile:
            blocker = _compile_blocker(self.device)
            if blocker:
                logger.warning("--compile: %s; training without torch.compile", blocker)
            else:
                eager, forward = forward, torch.compile(forward)
        optimizer = torch.optim.SGD(self.params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
        scaler = grad_scaler(self.device, settings.precision)
        return StepState(objective, forward, eager, optimizer, scaler, init)

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
        with autocast(self.device, self.settings.precision):
            image_features, text_features = state.forward(images, state.objective.inputs)
        parts = state.objective.loss(image_features, text_features, labels, ce_normaliser=normaliser)
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
        model, optim, settings = self.model, self.optim, self.settings
        state = self.prepare()
        optimizer, init = state.optimizer, state.init
        start_epoch, step, elapsed = 0, 0, 0.0
        grad_sq_cum = torch.zeros(len(self.params), device=self.device, dtype=torch.float64)
        if resume is not None:
            start_epoch, step, elapsed = self._restore(resume, optimizer, init, grad_sq_cum, state.scaler)
            self.metrics.truncate_after(step)
            self.layers.truncate_after(step)

        task = self.task
        batches = TrainBatches(
            task.samples, task.reader, self.bundle.preprocess, task.crop_scale, optim.batch_size, settings.seed,
            rank=self.env.rank, world_size=self.env.world_size, cache=task.cache,
        )  # fmt: skip
        loader, sampler = batches.loader(settings.num_workers), batches.sampler
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
                window, epoch_stats = StepStats(self.device), StepStats(self.device)
                for images, labels in loader:
                    images, labels = images.to(self.device, non_blocking=True), labels.to(self.device)
                    parts, grad_sq = self.train_step(state, images, labels, sampler.global_batch_size)
                    grad_sq_cum += grad_sq
                    step += 1
                    window.add(parts, labels)
                    epoch_stats.add(parts, labels)
                    if step % settings.log_every == 0:
                        self._log_step(step, epoch, lr, window, grad_sq, grad_sq_cum, init)
                        window.reset()
                if not window.empty():  # the epoch's last steps since the previous record
                    self._log_step(step, epoch, lr, window, grad_sq, grad_sq_cum, init)
                last = epoch_stats.over_processes(self.env).means()
                elapsed_now = elapsed + time.time() - started
                if (epoch + 1) % settings.checkpoint_every == 0 or epoch + 1 == optim.epochs:
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
            if settings.grad_checkpointing:
                set_grad_checkpointing(model, None)
        return FitResult(epochs=optim.epochs, steps=step, train_seconds=elapsed + time.time() - started, last=last)

    # ------------------------------------------------------------------ logs and checkpoints

    def _log_step(self, step, epoch, lr, window: StepStats, grad_sq, grad_sq_cum, init) -> None:
        means = window.over_processes(self.env).means()  # every process takes part, only the main one writes
        if self.run_dir is None:
            return
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
        self.run_dir.save_checkpoint(init, final, meta, optim=buffers, rng=rng_state())

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
