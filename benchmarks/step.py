"""Time and memory of one training step: clipfit against the released implementation's way.

In one process, on copies of the same model (same architecture and weights), the same batch and
the same class count, this times

  clipfit       clipfit's step through its own machinery (``clipfit.engine.Trainer.prepare`` +
                ``train_step``): image and text features in one pass, the text over every class on
                token sequences cut to the longest prompt, the loss against t0 computed once,
                SGD on the 46,080 trained values, squared-gradient sums
  reference     the step of the released CLIPFit trainer (``trainers/ClipFit.py``, its fp32
                branch), on the same open_clip model and trained tensors: the text encoder run twice
                per step over full 77-token sequences (once for the logits, once for the
                regulariser), t0 from a second frozen copy of the model kept in memory, SGD built
                over every parameter (Dassl builds it over the whole prompt learner), fp32
  full          full fine-tuning through clipfit's machinery (every weight trained, SGD momentum)
  forward       the forward of clipfit's step without autograd: the floor of any training step

then clipfit's evaluation path (``clipfit.evaluate.subset_accuracy``) against a plain open_clip loop
(``model.encode_image`` over the same DataLoader), in images per second.

Times are medians over ``--repeats`` interleaved rounds (one step of every variant per round, so
load that drifts during the run hits all of them alike) after ``--warmup`` rounds. Memory is the
peak of a step: the tensors a variant holds between steps (its model copies, optimizer state,
inputs, t0) plus the peak of tensors allocated during one step and alive at the same time
(activations kept for backward, gradients, temporaries). On CUDA the second part is
``max_memory_allocated`` minus the memory allocated before the step; on CPU, where torch keeps
no allocator statistics, it is counted exactly by a dispatch mode that adds each new tensor
storage's bytes when an operator creates it and subtracts them when the storage is freed.
GFLOP are counted by ``torch.utils.flop_counter`` (matmuls, convolutions, attention) and do not
depend on the machine's load.

    python benchmarks/step.py                      # ViT-B-16 at random init, batch 32, 100 classes, CPU
    python benchmarks/step.py --device cuda
    python benchmarks/step.py --classes 1000 --grad-checkpointing text --repeats 1 --skip-eval
    python benchmarks/step.py --smoke              # tiny model, one round (what the test runs)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import platform
import statistics
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from torch.utils.weak import WeakIdKeyDictionary

if __package__ in (None, ""):  # run as a script from a checkout: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import open_clip
from PIL import Image

from clipfit.config import OptimConfig
from clipfit.data.base import Sample
from clipfit.data.loaders import default_workers, eval_loader
from clipfit.data.sampling import ClassSubset
from clipfit.engine import Trainer, TrainSettings, TrainTask
from clipfit.evaluate import subset_accuracy
from clipfit.models import build_model
from clipfit.prompts import make_prompts
from clipfit.recipes import apply_recipe, get_recipe
from clipfit.runtime import autocast, resolve_device, resolve_precision
from clipfit.towers import train_mode

TEMPLATE = "a photo of a {}."
TARGETS = {"speedup": 2.0, "over_forward": 3.0, "eval": 1.0}
MIB = 2**20


# ---------------------------------------------------------------------------- measuring


class LiveBytes(TorchDispatchMode):
    """Peak bytes of tensor storages created inside the context and alive at the same time.

    Storages that exist before entering (``existing``: weights, optimizer state, inputs) are not
    counted, nor are views and in-place results, which share a storage already seen.
    """

    def __init__(self, existing: list[torch.Tensor]) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._seen: WeakIdKeyDictionary = WeakIdKeyDictionary()
        for tensor in existing:
            self._seen[tensor.untyped_storage()] = 0

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        if storage in self._seen:
            return
        nbytes = storage.nbytes()
        self._seen[storage] = nbytes
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, nbytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self._track, out)
        return out


def storage_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    seen: dict[tuple[str, int], int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


def model_tensors(model: nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def flop_counter() -> FlopCounterMode:
    """torch's FLOP counter, which knows the CUDA attention kernels, also counting the CPU one."""
    aten, extra = torch.ops.aten, {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        extra[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_attention_flops
        extra[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_attention_backward_flops
    return FlopCounterMode(display=False, custom_mapping=extra)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------- the variants


@dataclass
class Variant:
    name: str
    step: Callable[[], object]  # one step (or forward) on the benchmark batch
    held: Callable[[], list[torch.Tensor]]  # what it keeps between steps
    times: list[float] = field(default_factory=list)
    first: float = 0.0  # the first call (includes compilation for --compile)
    gflop: float = 0.0
    peak_mib: float = 0.0


class ReleasedStep:
    """One step of the released CLIPFit trainer (``CoOp_Fit.forward_backward``, fp32 branch).

    ``CustomCLIP.forward`` encodes the images and the class prompts (77 tokens), then
    ``PromptLearner.forward_similarity`` encodes the prompts again for the regulariser against
    ``text_features`` computed by ``clip_model_``, a second CLIP loaded for that purpose.
    """

    def __init__(self, model: nn.Module, tokens: torch.Tensor, reg_weight: float, optim: OptimConfig) -> None:
        self.model, self.tokens, self.reg_weight = model, tokens, reg_weight
        self.frozen = copy.deepcopy(model).requires_grad_(False)
        with torch.no_grad():
            self.t0 = self.frozen.encode_text(tokens)
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay
        )

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        model = self.model
        image = model.encode_image(images)
        image = image / image.norm(dim=-1, keepdim=True)
        text = model.encode_text(self.tokens)
        text = text / text.norm(dim=-1, keepdim=True)
        logits = model.logit_scale.exp() * image @ text.t()
        again = model.encode_text(self.tokens)  # forward_similarity(): the text encoder a second time
        again = again / again.norm(dim=-1, keepdim=True)
        old = self.t0 / self.t0.norm(dim=-1, keepdim=True)
        score = 1.0 - torch.mean(F.cosine_similarity(again, old, dim=1, eps=1e-07))
        loss = F.cross_entropy(logits, labels) + self.reg_weight * score
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item() + logits.argmax(1).eq(labels).float().mean().item()  # Dassl's loss_summary

    def held(self) -> list[torch.Tensor]:
        frozen = model_tensors(self.frozen)
        return [*model_tensors(self.model), *frozen, self.t0, self.tokens, *optimizer_tensors(self.optimizer)]


def _trainer(bundle, model: nn.Module, recipe: str, classnames, optim: OptimConfig, device, precision, **options):
    head = get_recipe(recipe).make_head()  # CoOp's and CoCoOp's context ("a photo of a" for CoCoOp)
    head.attach(model, bundle.tokenizer, classnames)
    model.to(device)
    trained = apply_recipe(model, recipe)
    task = TrainTask([], classnames, TEMPLATE, reader=None, crop_scale=(0.08, 1.0))
    settings = TrainSettings(optim, seed=1, device=device, precision=precision, **options)
    trainer = Trainer(replace(bundle, model=model, head=head), trained, task, settings)
    state = trainer.prepare()
    train_mode(model)
    return trainer, state


def _trainer_held(model: nn.Module, state) -> list[torch.Tensor]:
    objective = state.objective
    extra = [objective.inputs, *state.init.values()] + ([objective.t0] if objective.t0 is not None else [])
    return model_tensors(model) + extra + optimizer_tensors(state.optimizer)


VARIANTS = ("clipfit", "reference", "full", "forward", "coop", "cocoop")


def build_variants(args, bundle, device, precision, images, labels) -> tuple[list[Variant], dict]:
    classnames = class_names(args.classes)
    wanted = set(args.variants)
    base = copy.deepcopy(bundle.model)  # pristine weights, copied for every variant
    optim = OptimConfig(lr=0.002, epochs=1, batch_size=args.batch_size, warmup_epochs=0, reg_weight=8.0)
    full_tokens = bundle.tokenizer(make_prompts(TEMPLATE, classnames)).to(device)
    variants = []

    model = copy.deepcopy(base)
    trainer, state = _trainer(bundle, model, "clipfit", classnames, optim, device, precision)
    if "clipfit" in wanted:
        variants.append(
            Variant("clipfit", lambda: trainer.train_step(state, images, labels), lambda: _trainer_held(model, state))
        )

    if "reference" in wanted:
        ref_model = copy.deepcopy(base)
        apply_recipe(ref_model, "clipfit")
        train_mode(ref_model)
        reference = ReleasedStep(ref_model, full_tokens, 8.0, optim)
        variants.append(Variant("reference", lambda: reference(images, labels), reference.held))

    if "full" in wanted:
        full_model = copy.deepcopy(base)
        full_optim = OptimConfig(lr=1e-4, epochs=1, batch_size=args.batch_size, warmup_epochs=0, reg_weight=8.0)
        full_trainer, full_state = _trainer(bundle, full_model, "full", classnames, full_optim, device, precision)
        variants.append(
            Variant(
                "full fine-tuning",
                lambda: full_trainer.train_step(full_state, images, labels),
                lambda: _trainer_held(full_model, full_state),
            )
        )

    # prompt learners: CoOp's context (one text pass over the classes per step) against CoCoOp's (a text pass
    # over every class for every image of the batch: B x C sequences in one batched forward)
    for name in ("coop", "cocoop"):
        if name not in wanted:
            continue
        prompt_model = copy.deepcopy(base)
        prompt_optim = OptimConfig(lr=0.002, epochs=1, batch_size=args.batch_size, warmup_epochs=0, reg_weight=0.0)
        t, s = _trainer(bundle, prompt_model, name, classnames, prompt_optim, device, precision)
        variants.append(
            Variant(
                name,
                lambda t=t, s=s: t.train_step(s, images, labels),
                lambda m=prompt_model, s=s: _trainer_held(m, s),
            )
        )

    def forward_only():
        with torch.no_grad(), autocast(device, precision):
            image, text = state.forward(images, state.objective.inputs)
            return model.logit_scale.exp() * image.float() @ text.float().T

    if "forward" in wanted:
        variants.append(Variant("forward only", forward_only, lambda: [*model_tensors(model), state.objective.inputs]))

    for label, options in (("clipfit --compile", {"compile": True}), ("clipfit --grad-checkpointing", None)):
        if label.endswith("--compile") and not args.compile:
            continue
        if label.endswith("checkpointing"):
            if not args.grad_checkpointing:
                continue
            label = f"clipfit --grad-checkpointing {args.grad_checkpointing}"
            options = {"grad_checkpointing": args.grad_checkpointing}
        m = copy.deepcopy(base)
        t, s = _trainer(bundle, m, "clipfit", classnames, optim, device, precision, **options)
        variants.append(
            Variant(label, lambda t=t, s=s: t.train_step(s, images, labels), lambda m=m, s=s: _trainer_held(m, s))
        )
    info = {"cut_length": int(state.objective.inputs.shape[1]), "full_length": int(full_tokens.shape[1])}
    del base
    return variants, info


def class_names(n: int) -> list[str]:
    """The first ``n`` ImageNet class names (numbered repeats past 1000)."""
    names = list(open_clip.IMAGENET_CLASSNAMES)
    return [names[i % len(names)] + (f" {i // len(names)}" if i >= len(names) else "") for i in range(n)]


def account(variant: Variant, existing: list[torch.Tensor], device: torch.device) -> None:
    """One more step, counting FLOPs and the peak of tensors alive during it.

    A compiled step runs as generated code that Python dispatch modes do not see: its FLOPs are not
    counted, and on CPU neither is its memory (on CUDA the allocator's statistics still are).
    """
    compiled = "--compile" in variant.name
    held = storage_bytes(variant.held())
    counter = contextlib.nullcontext() if compiled else flop_counter()
    with counter as flops:
        if device.type == "cuda":
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            variant.step()
            synchronize(device)
            transient = torch.cuda.max_memory_allocated(device) - before
        elif compiled:
            transient = math.nan
        else:
            with LiveBytes(existing + variant.held()) as live:
                variant.step()
            transient = live.peak
    variant.gflop = math.nan if compiled else flops.get_total_flops() / 1e9
    variant.peak_mib = (held + transient) / MIB


# ---------------------------------------------------------------------------- evaluation


def eval_throughput(args, bundle, device, precision) -> dict:
    """Images per second of clipfit's evaluation path and of a plain open_clip loop, same loader."""
    model, spec = bundle.model, bundle.preprocess
    model.eval()
    rng = torch.Generator().manual_seed(0)
    size = (spec.size * 3 // 2, spec.size * 5 // 4)  # a photo larger than the input, as in the benchmarks
    encoded = []
    for _ in range(min(8, args.eval_images)):
        pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=rng, dtype=torch.uint8).numpy()
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())

    def reader(path: str) -> Image.Image:
        return Image.open(io.BytesIO(encoded[int(path) % len(encoded)])).convert("RGB")

    classnames = class_names(args.classes)
    samples = [Sample(str(i), i % args.classes, classnames[i % args.classes]) for i in range(args.eval_images)]
    subset = ClassSubset("all", tuple(range(args.classes)), tuple(classnames))
    workers = default_workers() if args.num_workers is None else args.num_workers

    def clipfit_eval() -> None:
        subset_accuracy(
            model, bundle.tokenizer, subset, TEMPLATE, samples, reader, spec, device, precision,
            batch_size=args.eval_batch_size, num_workers=workers,
        )  # fmt: skip

    @torch.no_grad()
    def plain_loop() -> None:
        loader = eval_loader(samples, reader, spec, args.eval_batch_size, workers)
        with autocast(device, precision):
            text = model.encode_text(bundle.tokenizer(make_prompts(TEMPLATE, classnames)).to(device))
            text = text / text.norm(dim=-1, keepdim=True)
            correct = 0
            for batch, targets in loader:
                features = model.encode_image(batch.to(device))
                features = features / features.norm(dim=-1, keepdim=True)
                correct += int((100.0 * features @ text.T).argmax(dim=-1).cpu().eq(targets).sum())

    runs: dict[str, list[float]] = {"clipfit": [], "plain open_clip loop": []}
    for round_ in range(args.warmup + args.repeats):
        for name, fn in (("clipfit", clipfit_eval), ("plain open_clip loop", plain_loop)):
            synchronize(device)
            started = time.perf_counter()
            fn()
            synchronize(device)
            if round_ >= args.warmup:
                runs[name].append(args.eval_images / (time.perf_counter() - started))
    return {name: {"median": statistics.median(v), "min": min(v), "max": max(v)} for name, v in runs.items()}


# ---------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-16", help="open_clip architecture (default ViT-B-16)")
    p.add_argument("--pretrained", default="none", help="weights (default none: random init; speed does not care)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    p.add_argument(
        "--classes", type=int, default=100, help="classes, i.e. prompts through the text tower (default 100)"
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, auto")
    p.add_argument("--precision", default="auto", help="clipfit's precision (auto: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--compile", action="store_true", help="also time clipfit's step with --compile")
    p.add_argument(
        "--grad-checkpointing",
        choices=("text", "image", "all"),
        help="also time clipfit's step with this checkpointing",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(VARIANTS),
        help="which steps to time (default all; the reference needs the memory of two text passes on 77 tokens)",
    )
    p.add_argument("--eval-images", type=int, default=128, help="images per evaluation pass (default 128)")
    p.add_argument("--eval-batch-size", type=int, default=64, help="evaluation batch (default 64)")
    p.add_argument("--num-workers", type=int, help="evaluation DataLoader workers (default: clipfit's, half the cores)")
    p.add_argument("--skip-eval", action="store_true", help="no evaluation throughput")
    p.add_argument("--json", metavar="FILE", help="also write every number to this JSON file")
    p.add_argument("--smoke", action="store_true", help="tiny model, batch 4, 6 classes, one round: checks the script")
    return p


def _number(value: float, spec: str) -> str:
    return format(value, spec) if not math.isnan(value) else format("n/a", ">" + spec.split(".")[0])


def step_record(v: Variant, median: float) -> dict:
    gflop, peak = (None if math.isnan(x) else x for x in (v.gflop, v.peak_mib))
    return {"median_s": median, "times_s": v.times, "first_s": v.first, "gflop": gflop, "peak_mib": peak}


def verdicts(ratios: dict) -> dict[str, str]:
    out = {}
    if "reference / clipfit" in ratios:
        speedup = ratios["reference / clipfit"]
        out["speedup"] = "met" if speedup >= TARGETS["speedup"] else f"missed by {TARGETS['speedup'] / speedup:.2f}x"
    if "clipfit / forward only" in ratios:
        over = ratios["clipfit / forward only"]
        out["over_forward"] = (
            "met" if over <= TARGETS["over_forward"] else f"missed by {over / TARGETS['over_forward']:.2f}x"
        )
    if "eval clipfit / plain" in ratios:
        e = ratios["eval clipfit / plain"]
        out["eval"] = "met" if e >= TARGETS["eval"] else f"missed by {(1 - e) * 100:.1f}%"
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.model, args.pretrained, args.batch_size, args.classes = "clipfit-tiny", "none", 4, 6
        args.repeats, args.warmup, args.eval_images, args.eval_batch_size = 1, 0, 8, 4
        args.num_workers = 0 if args.num_workers is None else args.num_workers
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TQDM_DISABLE", "1")
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None

    torch.manual_seed(0)
    bundle = build_model(args.model, args.pretrained, device)
    g = torch.Generator().manual_seed(0)
    size = bundle.preprocess.size
    images = torch.randn(args.batch_size, 3, size, size, generator=g).to(device)
    labels = (torch.arange(args.batch_size) % args.classes).to(device)
    variants, info = build_variants(args, bundle, device, precision, images, labels)

    for round_ in range(args.warmup + args.repeats):
        for variant in variants:
            synchronize(device)
            started = time.perf_counter()
            variant.step()
            synchronize(device)
            elapsed = time.perf_counter() - started
            if round_ == 0:
                variant.first = elapsed
            if round_ >= args.warmup:
                variant.times.append(elapsed)
    existing = [images, labels]
    for variant in variants:
        account(variant, existing, device)
    evaluation = None if args.skip_eval else eval_throughput(args, bundle, device, precision)
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None

    median = {v.name: statistics.median(v.times) for v in variants}
    ratios = {}
    if {"reference", "clipfit"} <= set(median):
        ratios["reference / clipfit"] = median["reference"] / median["clipfit"]
    if {"forward only", "clipfit"} <= set(median):
        ratios["clipfit / forward only"] = median["clipfit"] / median["forward only"]
    if evaluation:
        ratios["eval clipfit / plain"] = evaluation["clipfit"]["median"] / evaluation["plain open_clip loop"]["median"]
    verdict = verdicts(ratios)

    threads = torch.get_num_threads()
    print(
        f"{args.model} ({args.pretrained}), batch {args.batch_size}, {args.classes} classes (prompts cut to "
        f"{info['cut_length']} of {info['full_length']} tokens), {device} {precision}, {threads} threads, "
        f"median of {args.repeats} rounds after {args.warmup} warm-up"
    )
    if load_before:
        print(f"load average (1/5/15 min) before {'/'.join(f'{x:.2f}' for x in load_before)}, after "
              f"{'/'.join(f'{x:.2f}' for x in load_after)}")  # fmt: skip
    print(f"{'step':<36}{'s/step':>9}{'min':>9}{'max':>9}{'GFLOP':>10}{'peak MiB':>10}")
    for v in variants:
        print(
            f"{v.name:<36}{median[v.name]:9.3f}{min(v.times):9.3f}{max(v.times):9.3f}"
            f"{_number(v.gflop, '10.4g')}{_number(v.peak_mib, '10.0f')}"
        )
    if any("--compile" in v.name for v in variants):
        compiled = next(v for v in variants if "--compile" in v.name)
        print(f"(clipfit --compile: first step, with compilation, {compiled.first:.1f} s)")
    labels_ = {"reference / clipfit": ("speedup", ">="), "clipfit / forward only": ("over_forward", "<=")}
    for key, (target, sign) in labels_.items():
        if key in ratios:
            print(f"{key:<25}{ratios[key]:.2f}x  (target {sign} {TARGETS[target]:.0f}x: {verdict[target]})")
    if evaluation:
        for name, e in evaluation.items():
            print(f"evaluation {name:<26}{e['median']:9.2f} images/s (min {e['min']:.2f}, max {e['max']:.2f})")
        print(f"eval clipfit / plain     {ratios['eval clipfit / plain']:.2f}x  (target >= 1x: {verdict['eval']})")

    if args.json:
        record = {
            "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "device": str(device),
            "precision": precision,
            "threads": threads,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "versions": {
                "torch": torch.__version__,
                "open_clip": open_clip.__version__,
                "python": platform.python_version(),
            },
            **info,
            "steps": {v.name: step_record(v, median[v.name]) for v in variants},
            "evaluation_images_per_s": evaluation,
            "ratios": ratios,
            "targets": verdict,
        }
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
