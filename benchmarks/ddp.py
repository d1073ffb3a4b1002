"""What DistributedDataParallel costs per clipfit step, with clipfit's options and with torch's defaults.

Run under torchrun; every process trains copies of the same model on its slice of the same batch:

    torchrun --standalone --nproc_per_node 2 benchmarks/ddp.py                 # tiny model: the overhead shows
    torchrun --standalone --nproc_per_node 2 benchmarks/ddp.py --model ViT-B-16 --batch-size 32
    torchrun --nproc_per_node 8 benchmarks/ddp.py --model ViT-B-16 --device cuda --batch-size 256

For each option set it reports the collective operations of one step (from torch.profiler's
records of the process group: a count that does not depend on the machine's load), the bytes
DDP registers for all-reduce (DDP's own logging data) and the median step time over interleaved
steps. ``clipfit`` is :func:`clipfit.runtime.ddp_options` (no buffer broadcast before every
forward, gradients as bucket views, batched gradient copies where torch has them); ``torch
defaults`` is ``DistributedDataParallel(module)``.
"""

from __future__ import annotations

import argparse
import collections
import copy
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.profiler import profile

if __package__ in (None, ""):  # run as a script from a checkout: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import clipfit.engine as engine
from clipfit.config import OptimConfig
from clipfit.models import build_model
from clipfit.recipes import apply_recipe
from clipfit.runtime import ddp_summary, destroy_distributed, device_for, init_distributed, resolve_precision
from clipfit.towers import train_mode

COLLECTIVE_PREFIXES = ("gloo:", "nccl:")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="clipfit-tiny")
    p.add_argument("--batch-size", type=int, default=32, help="global batch (split over the processes)")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--steps", type=int, default=20, help="timed steps per option set")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (DDP rebuilds its buckets once)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    env = init_distributed(args.device)
    if not env.distributed:
        print("run me under torchrun, e.g. torchrun --standalone --nproc_per_node 2 benchmarks/ddp.py")
        return 2
    device = device_for(env, args.device)
    precision = resolve_precision("auto", device)
    torch.manual_seed(0)
    bundle = build_model(args.model, "none", device)
    classnames = [f"class number {i}" for i in range(args.classes)]
    optim = OptimConfig(lr=0.002, epochs=1, batch_size=args.batch_size, warmup_epochs=0, reg_weight=8.0)
    per_rank = args.batch_size // env.world_size
    g = torch.Generator().manual_seed(env.rank)
    size = bundle.preprocess.size
    images = torch.randn(per_rank, 3, size, size, generator=g).to(device)
    labels = (torch.arange(per_rank) % args.classes).to(device)

    def torch_defaults(module, dev, **overrides):
        return DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None)

    variants = {}
    for name, wrap in (("clipfit", engine.wrap_ddp), ("torch defaults", torch_defaults)):
        model = copy.deepcopy(bundle.model)
        trained = apply_recipe(model, "clipfit")
        task = engine.TrainTask([], classnames, "a photo of a {}.", reader=None, crop_scale=(0.08, 1.0))
        settings = engine.TrainSettings(optim, seed=1, device=device, precision=precision)
        trainer = engine.Trainer(replace(bundle, model=model), trained, task, settings, env=env)
        original, engine.wrap_ddp = engine.wrap_ddp, wrap
        try:
            state = trainer.prepare()
        finally:
            engine.wrap_ddp = original
        train_mode(model)
        variants[name] = (trainer, state)

    def step(name: str) -> None:
        trainer, state = variants[name]
        trainer.train_step(state, images, labels, args.batch_size)

    for _ in range(args.warmup):
        for name in variants:
            step(name)
    collectives = {}
    for name in variants:
        with profile() as prof:
            step(name)
        collectives[name] = collections.Counter(e.name for e in prof.events() if e.name.startswith(COLLECTIVE_PREFIXES))
    times = {name: [] for name in variants}
    for _ in range(args.steps):
        for name in variants:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            step(name)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - started)
    if env.is_main:
        load = "/".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
        print(
            f"{args.model}, global batch {args.batch_size} over {env.world_size} processes, {args.classes} classes, "
            f"{device} {precision}, {torch.get_num_threads()} threads per process, load average {load}"
        )
        for name, (_, state) in variants.items():
            calls = ", ".join(f"{k} x{v}" for k, v in sorted(collectives[name].items())) or "none"
            t = times[name]
            print(f"{name:<16} median {statistics.median(t) * 1e3:9.2f} ms/step (min {min(t) * 1e3:.2f}, max "
                  f"{max(t) * 1e3:.2f}); collectives per step: {calls}")  # fmt: skip
            print(f"{'':<16} {ddp_summary(state.forward)}")
    destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
