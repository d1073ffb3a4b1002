"""The training objective, one owner for the trainer and the analyses (PAPER.md section 2).

    L = CE(s * <f_img, f_txt>, y) + lambda * (1 - mean_c cos(t_c, t0_c))

``s = exp(logit_scale)`` is frozen; ``f_img`` and ``f_txt`` are L2-normalised and come through the
recipe's head (plain CLIP, CoOp's context, CLIP-Adapter's adapter); ``t_c`` is the current text
feature of class ``c`` (computed once per step for every class of the label space and shared with
the cross-entropy), ``t0_c`` the feature of the same template prompt under the pretrained model,
computed once before training (no second model copy). The regulariser is evaluated in fp32,
whatever the autocast precision (the released code drops it under mixed precision). lambda is
decided when the run's settings are resolved (:func:`clipfit.config.resolve`): 0 for a recipe that
cannot move the text features.

:class:`Objective` is the module DistributedDataParallel wraps (images + class inputs -> features);
:meth:`Objective.loss` turns the features into :class:`LossParts`; :class:`StepStats` sums the parts
of many steps for the logs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from clipfit.errors import ClipfitError, ConfigError
from clipfit.heads import ClipHead
from clipfit.layers import describe
from clipfit.prompts import class_tokens
from clipfit.runtime import DistEnv, all_reduce_sum, autocast
from clipfit.towers import image_input_dtype, train_mode

# Towers (clipfit.layers) whose tensors change the class text features, and the image features.
_TEXT_TOWERS = {"text", "prompt"}
_IMAGE_TOWERS = {"image", "adapter"}


@dataclass
class LossParts:
    loss: torch.Tensor  # the total, what backward() runs on
    ce: torch.Tensor  # cross-entropy part (detached)
    reg: torch.Tensor  # 1 - mean cosine to t0 (detached; zero when lambda == 0 and not computed)
    logits: torch.Tensor  # (B, C), detached, for accuracy


def text_regulariser(text_features: torch.Tensor, t0: torch.Tensor) -> torch.Tensor:
    """``1 - mean_c cos(t_c, t0_c)`` in fp32 (over images too when the class features are per image, (B, C, D))."""
    return 1.0 - F.cosine_similarity(text_features.float(), t0.float(), dim=-1).mean()


def class_logits(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """``s <f_img, t_c>`` in fp32: (B, C) from (B, D) image and (C, D) or per-image (B, C, D) class features."""
    scale = logit_scale.exp().float()
    if text_features.ndim == 3:
        return scale * torch.einsum("bd,bcd->bc", image_features.float(), text_features.float())
    return scale * image_features.float() @ text_features.float().T


def clipfit_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: torch.Tensor,
    t0: torch.Tensor | None,
    reg_weight: float,
    ce_normaliser: float | None = None,
) -> LossParts:
    """The ClipFit loss for one batch.

    Args:
        image_features: (B, D) L2-normalised image features.
        text_features: (C, D) L2-normalised features of every class of the label space, or (B, C, D) when
            they depend on the image (CoCoOp).
        labels: (B,) class indices.
        logit_scale: the model's (frozen) log temperature.
        t0: (C, D) pretrained text features; may be None when ``reg_weight`` is 0.
        reg_weight: lambda.
        ce_normaliser: divide the summed cross-entropy by this instead of B. Distributed training
            passes each process's share of the global batch, so that the averaged gradient equals
            a single process's.
    """
    logits = class_logits(image_features, text_features, logit_scale)
    if ce_normaliser is None:
        ce = F.cross_entropy(logits, labels)
    else:
        ce = F.cross_entropy(logits, labels, reduction="sum") / ce_normaliser
    if reg_weight > 0:
        if t0 is None:
            raise ValueError("the regulariser needs the pretrained text features t0")
        reg = text_regulariser(text_features, t0)
        loss = ce + reg_weight * reg
    else:
        reg = torch.zeros((), device=logits.device)
        loss = ce
    return LossParts(loss=loss, ce=ce.detach(), reg=reg.detach(), logits=logits.detach())


class TrainingDiverged(ClipfitError):
    """The training loss or gradients stopped being finite numbers: the run would finish at chance."""


def check_finite(
    parts: LossParts, grad_sq: torch.Tensor, *, step: int, epoch: int, lr: float, precision: str, env: DistEnv
) -> None:
    """Stop at the first step whose loss or gradients are not finite (NaN or infinite).

    After such a step every trained tensor is NaN, so the run would go on and record a finished run
    at chance. One host synchronisation per step (fp16's gradient scaler already makes one); under
    torchrun the verdict is summed over processes, so all of them stop at the same step.

    Raises:
        TrainingDiverged: naming the step, the epoch, the learning rate and what to change.
    """
    bad = (~torch.isfinite(parts.loss.detach())).any() | (~torch.isfinite(grad_sq)).any()
    bad = bad.to(torch.float64).reshape(1)
    if env.distributed:
        bad = all_reduce_sum(bad)
    if not bool(bad.item()):
        return
    loss = parts.loss.detach().float().item()
    what = f"the loss is {loss:g}" if not math.isfinite(loss) else f"the gradients are not finite (loss {loss:g})"
    advice = "lower --lr (ClipFit's is 0.002, full fine-tuning's 1e-4)"
    if precision == "fp16":
        advice += ", or train with --precision bf16 or fp32 (fp16 overflows more easily)"
    raise TrainingDiverged(
        f"training diverged at step {step} (epoch {epoch + 1}, learning rate {lr:g}): {what}, and the run would "
        f"finish at chance; {advice}. The run directory keeps its last checkpoint from before; train again with "
        "--overwrite (or another --out)"
    )


@torch.no_grad()
def class_features(
    model: nn.Module, head: ClipHead, inputs: torch.Tensor, device: torch.device, precision: str
) -> torch.Tensor:
    """Normalised fp32 class features of the model as it is now, through ``head``, in eval mode."""
    was_training = model.training
    model.eval()
    with autocast(device, precision):
        features = F.normalize(head.encode_classes(model, inputs).float(), dim=-1)
    if was_training:
        train_mode(model)
    return features


class Objective(nn.Module):
    """Images + class inputs -> normalised (image, text) features through the recipe's head; and the loss.

    Build it with :meth:`build` while the model holds its pretrained values: ``t0`` is taken then.
    """

    def __init__(
        self,
        model: nn.Module,
        head: ClipHead,
        inputs: torch.Tensor,
        t0: torch.Tensor | None,
        reg_weight: float,
        image_trainable: bool = True,
        fixed_text: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.inputs = inputs  # the label space's class inputs (token ids cut to the longest prompt)
        self.t0 = t0  # pretrained text features of the template prompts (None without regulariser)
        self.reg_weight = reg_weight  # lambda (0: no regulariser)
        self.image_trainable = image_trainable  # False: image features need no graph
        self.fixed_text = fixed_text  # class features when nothing trained changes them (computed once)
        self.image_dtype = image_input_dtype(model)  # fp32, or fp16 in the released code's half precision

    @classmethod
    def build(
        cls,
        model: nn.Module,
        head: ClipHead,
        tokenizer: Callable[..., torch.Tensor],
        template: str,
        classnames: Sequence[str],
        trained: Sequence[str],
        reg_weight: float,
        device: torch.device,
        precision: str = "fp32",
    ) -> Objective:
        """The objective of a label space for a model whose ``trained`` tensors are about to change.

        Raises:
            ConfigError: ``reg_weight`` > 0 while no trained tensor changes the text features (the
                effective lambda is decided by :func:`clipfit.config.resolve`).
        """
        inputs = head.class_inputs(tokenizer, model, template, classnames).to(device)
        trained_towers = {describe(n).tower for n in trained}
        text_trained = bool(trained_towers & _TEXT_TOWERS)
        image_trained = bool(trained_towers & _IMAGE_TOWERS) or (head.prompts_image and "prompt" in trained_towers)
        t0 = None
        if reg_weight > 0:
            if not text_trained:
                raise ConfigError(
                    f"lambda {reg_weight:g} > 0 but no trained tensor changes the text features; resolve the "
                    "settings with clipfit.config.resolve, which sets lambda to 0 for such recipes"
                )
            # t0: the pretrained model's features of the dataset's template prompts.
            tokens = class_tokens(tokenizer, model, template, classnames).to(device)
            t0 = class_features(model, ClipHead(), tokens, device, precision)
        # Without trained text tensors the class features never change: compute them once.
        fixed_text = None if text_trained else class_features(model, head, inputs, device, precision)
        return cls(model, head, inputs, t0, reg_weight, image_trained, fixed_text)

    def forward(self, images: torch.Tensor, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.image_dtype)
        with torch.set_grad_enabled(self.image_trainable and torch.is_grad_enabled()):
            image = F.normalize(self.head.encode_images(self.model, images), dim=-1)
        if self.fixed_text is not None:
            return image, self.fixed_text
        if self.head.per_image:  # (B, C, D): every class's feature for every image, one batched text pass
            return image, F.normalize(self.head.encode_classes_per_image(self.model, inputs, image), dim=-1)
        return image, F.normalize(self.head.encode_classes(self.model, inputs), dim=-1)

    def loss(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        labels: torch.Tensor,
        ce_normaliser: float | None = None,
    ) -> LossParts:
        """The ClipFit loss of features made by :meth:`forward` (see :func:`clipfit_loss`)."""
        return clipfit_loss(
            image_features, text_features, labels, self.model.logit_scale, self.t0, self.reg_weight, ce_normaliser
        )

    def batch_loss(self, images: torch.Tensor, labels: torch.Tensor) -> LossParts:
        """Forward and loss of one batch in one call (for analyses; training goes through DDP's forward)."""
        return self.loss(*self(images, self.inputs), labels)


class StepStats:
    """Sums of the loss parts, correct predictions, images and steps over a window of training steps."""

    _FIELDS: ClassVar[tuple[str, ...]] = ("loss", "ce", "reg", "correct", "images", "steps")
    # per-process shares of a global mean (and the step count): divided over processes when summed
    _SHARES: ClassVar[list[int]] = [0, 1, 2, 5]

    def __init__(self, device: torch.device, sums: torch.Tensor | None = None) -> None:
        self.sums = sums if sums is not None else torch.zeros(len(self._FIELDS), device=device, dtype=torch.float64)

    def add(self, parts: LossParts, labels: torch.Tensor) -> None:
        """Count one step (on the device, no synchronisation)."""
        one = torch.ones((), device=self.sums.device, dtype=torch.float64)
        self.sums += torch.stack(
            [
                parts.loss.detach().double(),
                parts.ce.double(),
                parts.reg.double(),
                parts.logits.argmax(1).eq(labels).sum().double(),
                one * len(labels),
                one,
            ]
        )

    def __iadd__(self, other: StepStats) -> StepStats:
        self.sums += other.sums
        return self

    def reset(self) -> None:
        self.sums.zero_()

    @property
    def steps(self) -> float:
        return float(self.sums[5])

    def empty(self) -> bool:
        return bool(self.sums[5] == 0)

    def over_processes(self, env: DistEnv) -> StepStats:
        """The same sums over all processes (a collective call: every process must make it).

        Each process's loss, ce and reg are already shares of the global batch's means (see
        ``ce_normaliser``), so their sums over processes are divided by the world size, like the
        step count; correct predictions and images add up.
        """
        if not env.distributed:
            return self
        total = all_reduce_sum(self.sums.clone())
        total[self._SHARES] /= env.world_size
        return StepStats(self.sums.device, total)

    def means(self) -> dict[str, float]:
        """Per-step means of loss, ce and reg, and the accuracy (percent) over the images."""
        loss, ce, reg, correct, images, steps = self.sums.tolist()
        steps, images = max(steps, 1.0), max(images, 1.0)
        return {"loss": loss / steps, "ce": ce / steps, "reg": reg / steps, "acc": 100.0 * correct / images}
