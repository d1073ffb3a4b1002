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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from clipfit.checkpoint import Checkpoint, rng_state, set_rng_state
from clipfit.config import OptimConfig, RunConfig
from clipfit.console import Heartbeat
from clipfit.data.base import ImageReader, Sample
from clipfit.data.loaders import TrainBatches
from clipfit.errors import ConfigError
from clipfit.heads import ClipHead
from clipfit.layers import describe
from clipfit.models import ModelBundle
from clipfit.objective import LossParts, Objective, StepStats, check_finite
from clipfit.rundir import LAYERS_FILE, METRICS_FILE, JsonlLog, RunDir
from clipfit.runtime import DistEnv, autocast, ddp_summary, grad_scaler, wrap_ddp
from clipfit.towers import set_grad_checkpointing, train_mode

logger = logging.getLogger(__name__)

PREVIOUS_GRAD = "previous_grad"  # optim/<name>/previous_grad: the last step's gradient, for grad_cos after a resume


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
    val_every: int = 0  # epochs between validation accuracies (0: none; needs the Trainer's ``validate``)

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
            val_every=cfg.val_every or 0,
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
    previous_grads: list[torch.Tensor] | None = None  # the last step's gradient of each trained tensor (a copy)
    grad_cos: torch.Tensor | None = None  # cosine between the last two steps' gradients, per trained tensor


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
        sinks: Sequence[Callable[[dict[str, Any]], None]] = (),
        validate: Callable[[], float] | None = None,
    ) -> None:
        self.model, self.bundle, self.trained, self.task = bundle.model, bundle, list(trained), task
        self.validate = validate  # the validation accuracy (percent) at the model's current values
        self.settings, self.optim, self.device, self.env = settings, settings.optim, settings.device, env
        self.head = bundle.head or ClipHead()
        self.run_dir = run_dir if run_dir is not None and env.is_main else None
        self.checkpoint_meta = dict(checkpoint_meta or {})
        self.sinks = list(sinks) if env.is_main else []  # called with every metrics.jsonl row (clipfit.tracking)
        unresolved = [k for k in ("lr", "epochs", "reg_weight", "batch_size") if getattr(self.optim, k) is None]
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
        # (half precision mixes fp16 and fp32 tensors: the norms are stacked in fp64, exact for both)
        grad_sq = torch.stack([norm.double() for norm in torch._foreach_norm(grads)]).pow(2)
        self._track_grad_cos(state, grads, grad_sq)
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

    @torch.no_grad()
    def _track_grad_cos(self, state: StepState, grads: list[torch.Tensor], grad_sq: torch.Tensor) -> None:
        """cos(g_t, g_{t-1}) of each trained tensor into ``state.grad_cos`` (NaN on the first step), then keep g_t.

        The released instrumentation printed this for the text biases. It costs one copy of the trained
        tensors' gradients on the device (46k values for ClipFit); no value leaves the device here.
        """
        if state.previous_grads is None:
            state.previous_grads = [g.detach().clone() for g in grads]
            state.grad_cos = torch.full_like(grad_sq, math.nan)
            return
        dots = torch.stack(
            [
                torch.dot(g.flatten().float(), p.flatten().float())  # fp16 text biases (--precision half) in fp32
                for g, p in zip(grads, state.previous_grads, strict=True)
            ]
        ).double()
        previous_sq = torch.stack([n.double() for n in torch._foreach_norm(state.previous_grads)]).pow(2)
        # 0/0 (a zero gradient) and a skipped fp16 step's inf give NaN: no direction, logged as null
        state.grad_cos = dots / (grad_sq * previous_sq).sqrt()
        torch._foreach_copy_(state.previous_grads, grads)

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
            state.previous_grads = self._restored_grads(resume)
        # The logs hold exactly the steps before the one this fit starts from (none on a fresh start): what an
        # attempt killed after logging but before its checkpoint wrote goes, so no step is logged twice.
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
        # in a log (stdout not a terminal) a line every N steps instead of the bar: images/s and ETA
        beat = Heartbeat(len(sampler) * optim.epochs, "train", initial=step, enabled=self.env.is_main)
        try:
            for epoch in range(start_epoch, optim.epochs):
                lr = lr_at_epoch(epoch, optim)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                sampler.set_epoch(epoch)
                beat.postfix["epoch"] = f"{epoch + 1}/{optim.epochs}"
                window, epoch_stats = StepStats(self.device), StepStats(self.device)
                for images, labels in loader:
                    images, labels = images.to(self.device, non_blocking=True), labels.to(self.device)
                    parts, grad_sq = self.train_step(state, images, labels, sampler.global_batch_size)
                    grad_sq_cum += grad_sq
                    step += 1
                    check_finite(  # stop at the first NaN/inf: a diverged run would otherwise finish at chance
                        parts, grad_sq, step=step, epoch=epoch, lr=lr, precision=settings.precision, env=self.env
                    )
                    beat.update(1, sampler.global_batch_size)
                    window.add(parts, labels)
                    epoch_stats.add(parts, labels)
                    if step % settings.log_every == 0:
                        self._log_step(step, epoch, lr, window, grad_sq, grad_sq_cum, init, state.grad_cos)
                        window.reset()
                if not window.empty():  # the epoch's last steps since the previous record
                    self._log_step(step, epoch, lr, window, grad_sq, grad_sq_cum, init, state.grad_cos)
                last = epoch_stats.over_processes(self.env).means()
                if self._validation_due(epoch):
                    last["val_acc"] = self._log_validation(step, epoch)
                elapsed_now = elapsed + time.time() - started
                if (epoch + 1) % settings.checkpoint_every == 0 or epoch + 1 == optim.epochs:
                    self._checkpoint(
                        epoch + 1, step, elapsed_now, init, optimizer, grad_sq_cum, state.scaler, state.previous_grads
                    )
                bar.update(1)
                shown = {"loss": f"{last['loss']:.3f}", "acc": f"{last['acc']:.1f}"}
                if "val_acc" in last:
                    shown["val"] = f"{last['val_acc']:.1f}"
                bar.set_postfix(**shown)
                beat.postfix.update(shown)  # the last finished epoch's
                milestone = epoch + 1 in (1, optim.epochs) or (epoch + 1) % max(1, optim.epochs // 10) == 0
                logger.log(
                    logging.INFO if milestone else logging.DEBUG,  # the console shows ~10 epochs, log.txt all
                    "epoch %d/%d lr %.2e loss %.4f ce %.4f reg %.5f acc %.1f%%%s",
                    epoch + 1,
                    optim.epochs,
                    lr,
                    last["loss"],
                    last["ce"],
                    last["reg"],
                    last["acc"],
                    f" val {last['val_acc']:.2f}%" if "val_acc" in last else "",
                )
        finally:
            bar.close()
            if settings.grad_checkpointing:
                set_grad_checkpointing(model, None)
        return FitResult(epochs=optim.epochs, steps=step, train_seconds=elapsed + time.time() - started, last=last)

    # ------------------------------------------------------------------ validation

    def _validation_due(self, epoch: int) -> bool:
        every = self.settings.val_every
        return self.validate is not None and every > 0 and ((epoch + 1) % every == 0 or epoch + 1 == self.optim.epochs)

    def _log_validation(self, step: int, epoch: int) -> float:
        """The validation accuracy after ``epoch``, logged as its own metrics.jsonl row (``step, epoch, val_acc``).

        It changes nothing of the training: the random number generators are restored afterwards (a
        DataLoader draws its seed from them) and the model goes back to training mode, so a run with
        validation trains exactly as one without.
        """
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            accuracy = float(self.validate())
        train_mode(self.model)
        row = {"step": step, "epoch": epoch, "val_acc": round(accuracy, 4)}
        for sink in self.sinks:
            sink(row)
        if self.run_dir is not None:
            self.metrics.write([row])
        return accuracy

    # ------------------------------------------------------------------ logs and checkpoints

    def _log_step(self, step, epoch, lr, window: StepStats, grad_sq, grad_sq_cum, init, grad_cos=None) -> None:
        means = window.over_processes(self.env).means()  # every process takes part, only the main one writes
        row = {"step": step, "epoch": epoch, "lr": lr, **{k: round(v, 6) for k, v in means.items()}}
        for sink in self.sinks:
            sink(row)
        if self.run_dir is None:
            return
        self.metrics.write([row])
        with torch.no_grad():
            change = torch.stack(
                [
                    (p.detach().float() - init[n].float()).pow(2).sum()
                    for n, p in zip(self.trained, self.params, strict=True)
                ]
            ).tolist()
        cosines = grad_cos.tolist() if grad_cos is not None else [math.nan] * len(self.trained)
        rows = []
        for name, sq_change, gsq, gcum, cos in zip(
            self.trained, change, grad_sq.tolist(), grad_sq_cum.tolist(), cosines, strict=True
        ):
            rows.append(
                {
                    "step": step,
                    "epoch": epoch,
                    **describe(name).columns(),
                    "sq_change": sq_change,
                    "grad_sq": gsq,
                    "grad_sq_cum": gcum,
                    "grad_cos": cos if math.isfinite(cos) else None,  # null on a run's (or resume's) first step
                }
            )
        self.layers.write(rows)

    def _checkpoint(self, epoch, step, elapsed, init, optimizer, grad_sq_cum, scaler=None, previous_grads=None) -> None:
        if self.run_dir is None:
            return
        state = optimizer.state_dict()["state"]
        buffers = {
            name: {k: v for k, v in state.get(i, {}).items() if isinstance(v, torch.Tensor)}
            for i, name in enumerate(self.trained)
        }
        for name, grad in zip(self.trained, previous_grads or [], strict=False):  # grad_cos goes on after a resume
            buffers[name][PREVIOUS_GRAD] = grad
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
                i: {k: v.to(self.device) for k, v in ckpt.optim.get(name, {}).items() if k != PREVIOUS_GRAD}
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

    def _restored_grads(self, ckpt: Checkpoint) -> list[torch.Tensor] | None:
        """The last step's gradients a resumable checkpoint kept for grad_cos (None from older checkpoints)."""
        grads = [ckpt.optim.get(name, {}).get(PREVIOUS_GRAD) for name in self.trained]
        if any(g is None for g in grads):
            return None
        # fresh allocations, as the clones of an uninterrupted run are: a tensor read from the file may sit at any
        # offset, and a float reduction over differently aligned memory can round differently
        return [torch.empty_like(p).copy_(g) for g, p in zip(grads, self.params, strict=True)]
