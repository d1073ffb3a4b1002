"""Where and how a run computes: device, autocast precision, and torch.distributed helpers.

On CUDA, ``auto`` precision is bf16 autocast; ``fp16`` adds a gradient scaler. Trained tensors
stay fp32 (autocast casts copies for the matmuls), except in ``half``, which reproduces the released
code's numerics (:func:`clipfit.models.to_half`: CLIP's linear, convolution and attention weights and
biases in fp16, LayerNorms fp32, SGD on the fp16 tensors, no loss scaling). On CPU everything is fp32 unless a
precision is asked for explicitly (useful for testing the autocast path).

Distributed runs are launched by torchrun, which sets RANK/WORLD_SIZE/LOCAL_RANK; clipfit
initialises the process group from those (NCCL on CUDA, gloo on CPU).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from clipfit.errors import ConfigError

logger = logging.getLogger(__name__)
T = TypeVar("T")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> the first GPU if CUDA is available, else the CPU; refuses devices this machine lacks."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device '{device}'; expected auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{device}' was requested but CUDA is not available here; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{device}' does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA, fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """The autocast context of a precision (a no-op for fp32, and for ``half``, whose weights are fp16 already)."""
    if precision in ("fp32", "half"):
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
        resolved = resolve_device(device)
        if resolved.type == "cuda" and resolved.index is not None and world > 1:
            raise ConfigError(
                f"--device {device} under torchrun would put every process on one GPU; use --device cuda "
                "(each process takes cuda:LOCAL_RANK) and choose GPUs with CUDA_VISIBLE_DEVICES"
            )
        use_cuda = resolved.type == "cuda"
        options = {}
        if use_cuda:
            torch.cuda.set_device(local)
            if "device_id" in inspect.signature(dist.init_process_group).parameters:
                options["device_id"] = torch.device("cuda", local)  # binds NCCL to this process's GPU
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", **options)
    return DistEnv(rank=rank, world_size=world, local_rank=local)


def destroy_distributed() -> None:
    """Leave the process group (at the end of a torchrun command); no-op otherwise."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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


@contextlib.contextmanager
def main_process_first(env: DistEnv) -> Iterator[None]:
    """Run the body on the main process first, then on the others.

    For code that may write shared files (few-shot draws, random splits): the main process writes
    them, the others find and read them, so no two processes write the same file.
    """
    if not env.is_main:
        barrier()
    try:
        yield
    finally:  # also on an error, so the others are released (and meet the same error themselves)
        if env.is_main:
            barrier()


def broadcast_object(obj: T, env: DistEnv) -> T:
    """The main process's ``obj`` on every process (identity when not distributed). Pickles: only for clipfit's
    own small values (a message, a flag), never for data read from files."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@torch.no_grad()
def broadcast_module(module: nn.Module, env: DistEnv) -> None:
    """Give every process the main process's parameters and buffers (random init, random heads).

    Pretrained weights are read identically everywhere, but ``--pretrained none`` and randomly
    initialised heads differ per process; zero-shot evaluation, ``t0`` and the initial values must
    be computed from the same model on every rank.
    """
    if not env.distributed:
        return
    for tensor in module.state_dict(keep_vars=True).values():
        dist.broadcast(tensor.data, src=0)


def ddp_options() -> dict:
    """DistributedDataParallel options for clipfit's training forward (see benchmarks/README.md).

    * buffers are not re-broadcast before every forward: a CLIP model's buffers are causal
      attention masks and, in ResNet towers, BatchNorm statistics that training leaves as
      pretrained (:func:`clipfit.engine.train_mode`), so none changes (``forward_sync_buffers=False``,
      or the older ``broadcast_buffers=False``);
    * gradients live in the all-reduce bucket (``gradient_as_bucket_view``) and, where this torch
      has it, are copied into it in one batched copy per bucket (``batched_grad_copy``): ClipFit's
      trained tensors are many and small (ViT-B/16: 64 tensors, 46,080 values, one bucket).

    Only tensors with ``requires_grad`` (the trained ones) are registered for all-reduce by DDP.
    """
    accepted = inspect.signature(DistributedDataParallel.__init__).parameters
    options = {"gradient_as_bucket_view": True}
    if "forward_sync_buffers" in accepted:
        options["forward_sync_buffers"] = False
    else:
        options["broadcast_buffers"] = False
    if "batched_grad_copy" in accepted:
        options["batched_grad_copy"] = True
    return options


def wrap_ddp(module: nn.Module, device: torch.device, **overrides) -> DistributedDataParallel:
    """``module`` in DistributedDataParallel with :func:`ddp_options` (``overrides`` replace them)."""
    options = {**ddp_options(), **overrides}
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, **options)


def ddp_summary(ddp: DistributedDataParallel) -> str:
    """What DDP itself says it all-reduces (tensors, bytes, buckets), once it has run a backward."""
    try:
        data = ddp._get_ddp_logging_data()  # private, but the only place DDP reports its buckets
    except Exception:  # a report, never a reason to fail a run
        return "DDP logging data unavailable"
    keys = ("num_parameter_tensors", "total_parameter_size_bytes", "bucket_sizes")
    return ", ".join(f"{k} {data.get(k)}" for k in keys)


@contextlib.contextmanager
def seeded_init(seed: int | None, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed torch's global generators for building a model and attaching its head, then put them back.

    Random initialisation (``--pretrained none``, CoOp's random context, CLIP-Adapter's first layer)
    is then the same in a run, its resumption and its re-evaluation from the checkpoint, and
    training's own random streams are untouched.
    """
    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0 if seed is None else int(seed))
        yield
