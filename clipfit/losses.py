"""The ClipFit objective (PAPER.md section 2).

    L = CE(s * <f_img, f_txt>, y) + lambda * (1 - mean_c cos(t_c, t0_c))

``s = exp(logit_scale)`` is frozen; ``f_img`` and ``f_txt`` are L2-normalised; ``t_c`` is the
current text feature of class ``c`` (computed once per step for every class and shared with
the cross-entropy), ``t0_c`` the feature of the same prompt under the pretrained model,
computed once before training. The regulariser is always evaluated in fp32, whatever the
autocast precision (the released code drops it under mixed precision).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossParts:
    loss: torch.Tensor  # the total, what backward() runs on
    ce: torch.Tensor  # cross-entropy part (detached)
    reg: torch.Tensor  # 1 - mean cosine to t0 (detached; zero when lambda == 0 and not computed)
    logits: torch.Tensor  # (B, C), detached, for accuracy


def text_regulariser(text_features: torch.Tensor, t0: torch.Tensor) -> torch.Tensor:
    """``1 - mean_c cos(t_c, t0_c)`` in fp32."""
    return 1.0 - F.cosine_similarity(text_features.float(), t0.float(), dim=-1).mean()


def clipfit_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: torch.Tensor,
    t0: torch.Tensor | None,
    reg_weight: float,
    ce_normaliser: int | None = None,
) -> LossParts:
    """The ClipFit loss for one batch.

    Args:
        image_features: (B, D) L2-normalised image features.
        text_features: (C, D) L2-normalised features of every class of the label space.
        labels: (B,) class indices.
        logit_scale: the model's (frozen) log temperature.
        t0: (C, D) pretrained text features; may be None when ``reg_weight`` is 0.
        reg_weight: lambda.
        ce_normaliser: divide the summed cross-entropy by this instead of B. Distributed training
            passes the global batch size so that the averaged gradient equals a single process's.
    """
    logits = logit_scale.exp().float() * image_features.float() @ text_features.float().T
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
