"""Where and how a run computes: device, autocast precision, and torch.distributed helpers.

On CUDA, ``auto`` precision is bf16 autocast; ``fp16`` adds a gradient scaler. Trained tensors
always stay fp32 (autocast casts copies for the matmuls). On CPU everything is fp32 unless a
precision is asked for explicitly (useful for testing the autocast path).

Distributed runs are launched by torchrun, which sets RANK/WORLD_SIZE/LOCAL_RANK; clipfit
initialises the process group from those (NCCL on CUDA, gloo on CPU).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' was requested but CUDA is not available; use --device cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA, fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """The autocast context of a precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the process group torchrun set up (idempotent); single process otherwise."""
    if not launched_by_torchrun():
        return DistEnv()
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistEnv(rank=rank, world_size=world, local_rank=local)


def device_for(env: DistEnv, device: str) -> torch.device:
    """The device of this process (cuda:LOCAL_RANK under torchrun on GPUs)."""
    resolved = resolve_device(device)
    if resolved.type == "cuda" and env.distributed and resolved.index is None:
        return torch.device("cuda", env.local_rank)
    return resolved


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes (in place); identity when not distributed."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
