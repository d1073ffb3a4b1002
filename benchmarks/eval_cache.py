"""Evaluation throughput: decoding JPEGs against the preprocessed test-set cache, and clipfit against the usual loops.

On a generated set of real-size JPEGs (default 2,000 of 500x375, quality 90, 10 classes in class folders), with one
model and one precision, each round times one full evaluation pass of every variant (images per second, text
features included):

  clipfit, JPEG            clipfit.evaluate.subset_accuracy with the cache off: DataLoader workers decode and
                           transform, the model's device normalises (what every evaluation cost before the cache)
  clipfit, first pass      the same with the cache on and no entry yet: it evaluates and writes the entry
  clipfit, cache           the same once the entry exists: nothing is decoded
  clipfit, nvjpeg pass     (CUDA only) the first pass with --eval-decoder nvjpeg: JPEGs decoded on the GPU in batches
  plain open_clip loop     open_clip's README way: ``preprocess(Image.open(path))`` in this process, batched
  CLIP_benchmark           CLIP_benchmark's zero-shot classification: torchvision ImageFolder + open_clip's
                           preprocess in a DataLoader with the same workers, ``encode_image``, normalise, 100 x
                           features @ classifier

Rounds are interleaved (one pass of every variant per round) and the medians reported. The accuracy of every
variant is printed too: with the same pixels they agree to every digit (nvjpeg's pixels differ slightly). Before
timing, the script waits for the machine to be quiet (load average below 0.5; ``--max-wait``) and says if it was not.

    python benchmarks/eval_cache.py                                  # clipfit-tiny (32 px), 2,000 JPEGs, CPU
    python benchmarks/eval_cache.py --model ViT-B-16 --images 200 --batch-size 50 --repeats 1 --warmup 0
    python benchmarks/eval_cache.py --device cuda --model ViT-B-16   # in benchmarks/gpu.sh
    python benchmarks/eval_cache.py --smoke                          # 24 small images, one round (the test)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script from a checkout: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import open_clip
from PIL import Image

from benchmarks.quiet import fmt, load, wait_for_quiet
from clipfit.data.base import Dataset, FileReader, Sample
from clipfit.data.loaders import default_workers
from clipfit.data.sampling import ClassSubset
from clipfit.data.testcache import CachePolicy, TestImages
from clipfit.evaluate import subset_accuracy
from clipfit.models import build_model
from clipfit.prompts import make_prompts
from clipfit.runtime import autocast, resolve_device, resolve_precision

TEMPLATE = "a photo of a {}."
CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_images(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[Sample]:
    """``count`` JPEGs of ``size`` in class folders (made once; reused when the folder holds them already).

    Photo-like for the encoder: smooth colour gradients, a few soft blobs and sensor noise, quality 90 (about
    40 KB at 500x375), so decoding costs what a photo's does; random pixels would decode slower."""
    marker = folder / f"done-{count}-{size[0]}x{size[1]}-{seed}"
    samples = [
        Sample(f"{CLASSES[i % len(CLASSES)]}/{i:05d}.jpg", i % len(CLASSES), CLASSES[i % len(CLASSES)])
        for i in range(count)
    ]
    if marker.exists():
        return samples
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for sample in samples:
        base = rng.uniform(0, 255, 3).astype(np.float32)
        slope = rng.uniform(-0.4, 0.4, (2, 3)).astype(np.float32)
        img = base + xx[..., None] * slope[0] + yy[..., None] * slope[1]
        for _ in range(4):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(20, 120)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
            img += blob * rng.uniform(-120, 120, 3).astype(np.float32)
        img += rng.normal(0, 6, img.shape).astype(np.float32)
        path = folder / sample.path
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
    marker.touch()
    return samples


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000, help="test images (default 2000)")
    p.add_argument("--size", default="500x375", help="JPEG size WxH (default 500x375, a typical benchmark photo)")
    p.add_argument("--model", default="clipfit-tiny", help="open_clip architecture (default clipfit-tiny, 32 px)")
    p.add_argument("--pretrained", default="none", help="weights (default none: random init; speed does not care)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    p.add_argument("--precision", default="auto", help="auto: bf16 autocast on CUDA, fp32 on CPU (every variant)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward (default 256)")
    p.add_argument("--num-workers", type=int, help="DataLoader workers (default clipfit's: half the cores, at most 8)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--variants", nargs="+", help="a subset of the variants, by name")
    p.add_argument("--data", help="where the JPEGs and the cache go (default: a folder in the temp directory)")
    p.add_argument("--max-wait", type=float, default=1800, help="seconds to wait for a quiet machine (default 1800)")
    p.add_argument("--json", metavar="FILE", help="also write every number to this JSON file")
    p.add_argument("--smoke", action="store_true", help="24 images of 64x48, one round, no waiting: checks the script")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.images, args.size, args.repeats, args.warmup, args.max_wait, args.batch_size = 24, "64x48", 1, 0, 0, 8
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    workers = default_workers() if args.num_workers is None else args.num_workers
    w, h = (int(v) for v in args.size.lower().split("x"))
    data = Path(args.data or Path(os.environ.get("TMPDIR", "/tmp")) / f"clipfit-bench-{args.images}-{w}x{h}")
    os.environ["CLIPFIT_CACHE"] = str(data / "cache")  # the benchmark's own cache, never the user's

    print(f"generating {args.images} JPEGs of {w}x{h} in {data / 'images'} (once)", flush=True)
    samples = make_images(data / "images", args.images, (w, h))
    bundle = build_model(args.model, args.pretrained, device)
    model, spec = bundle.model, bundle.preprocess
    model.eval()
    reader = FileReader(data / "images")
    dataset = Dataset("bench", CLASSES, TEMPLATE, [], [], samples, reader)
    subset = ClassSubset("all", tuple(range(len(CLASSES))), tuple(CLASSES))
    preprocess = open_clip.image_transform(
        spec.size, is_train=False, mean=spec.mean, std=spec.std, interpolation=spec.interpolation
    )
    prompts = bundle.tokenizer(make_prompts(TEMPLATE, CLASSES)).to(device)

    def clipfit(policy: CachePolicy, fresh: bool = False):
        def run() -> tuple[float, dict]:
            images = TestImages.of(dataset, spec, policy)
            if fresh and images.folder is not None and images.folder.exists():
                shutil.rmtree(images.folder)
            acc = subset_accuracy(
                model, bundle.tokenizer, subset, TEMPLATE, samples, reader, spec, device, precision,
                batch_size=args.batch_size, num_workers=workers, images=images,
            )  # fmt: skip
            return acc, dict(images.stats)

        return run

    @torch.no_grad()
    def classify(batches) -> tuple[float, dict]:
        with autocast(device, precision):
            text = F.normalize(model.encode_text(prompts).float(), dim=-1)
        correct = total = 0
        for images, targets in batches:
            with autocast(device, precision):
                features = F.normalize(model.encode_image(images.to(device)).float(), dim=-1)
                logits = 100.0 * features @ text.T
            correct += int(logits.argmax(dim=-1).cpu().eq(targets).sum())
            total += len(targets)
        return 100.0 * correct / total, {}

    def plain_loop() -> tuple[float, dict]:
        paths = [data / "images" / s.path for s in samples]
        labels = torch.tensor([s.label for s in samples])

        def batches():
            for i in range(0, len(paths), args.batch_size):
                yield (
                    torch.stack([preprocess(Image.open(p)) for p in paths[i : i + args.batch_size]]),
                    labels[i : i + args.batch_size],
                )

        return classify(batches())

    def clip_benchmark() -> tuple[float, dict]:
        from torchvision.datasets import ImageFolder

        folder = ImageFolder(str(data / "images"), transform=preprocess)
        loader = torch.utils.data.DataLoader(folder, batch_size=args.batch_size, shuffle=False, num_workers=workers)
        return classify(loader)

    variants = {
        "clipfit, JPEG": clipfit(CachePolicy(enabled=False)),
        "clipfit, first pass": clipfit(CachePolicy(), fresh=True),
        "clipfit, cache": clipfit(CachePolicy()),
        "plain open_clip loop": plain_loop,
        "CLIP_benchmark": clip_benchmark,
    }
    if device.type == "cuda":
        variants["clipfit, nvjpeg pass"] = clipfit(CachePolicy(decoder="nvjpeg"), fresh=True)
    if args.variants:
        unknown = set(args.variants) - set(variants)
        if unknown:
            print(f"unknown variants {sorted(unknown)}; known: {list(variants)}", file=sys.stderr)
            return 2
        variants = {k: v for k, v in variants.items() if k in args.variants}

    machine = wait_for_quiet(max_wait_s=args.max_wait) if args.max_wait > 0 else {"load_before": load()}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    accuracy: dict[str, float] = {}
    stats: dict[str, dict] = {}
    for round_ in range(args.warmup + args.repeats):
        for name, run in variants.items():
            synchronize(device)
            started = time.perf_counter()
            accuracy[name], stats[name] = run()
            synchronize(device)
            seconds = time.perf_counter() - started
            if round_ >= args.warmup:
                rates[name].append(args.images / seconds)
            print(f"round {round_ + 1}: {name:<22} {args.images / seconds:9.1f} images/s  acc {accuracy[name]:.2f}")
    load_after = load()

    summary = {n: {"median": statistics.median(v), "min": min(v), "max": max(v)} for n, v in rates.items() if v}
    entry = TestImages.of(dataset, spec).folder
    cache_bytes = sum(p.stat().st_size for p in entry.iterdir()) if entry and entry.exists() else 0
    print(
        f"\n{args.model} ({args.pretrained}), {args.images} JPEGs {w}x{h} -> {spec.size} px, {device} {precision}, "
        f"batch {args.batch_size}, {workers} DataLoader workers, {torch.get_num_threads()} torch threads; "
        f"load average {fmt(machine['load_before'])} before, {fmt(load_after)} after"
    )
    print(f"{'variant':<22} {'images/s':>10} {'(min-max)':>20} {'acc':>7}")
    for name, r in summary.items():
        spread = f"({r['min']:.1f}-{r['max']:.1f})"
        print(f"{name:<22} {r['median']:10.1f} {spread:>20} {accuracy[name]:7.2f}")
    ratios = {}
    pairs = [
        ("cache / JPEG", "clipfit, cache", "clipfit, JPEG"),
        ("first pass / JPEG", "clipfit, first pass", "clipfit, JPEG"),
        ("clipfit JPEG / plain loop", "clipfit, JPEG", "plain open_clip loop"),
        ("clipfit JPEG / CLIP_benchmark", "clipfit, JPEG", "CLIP_benchmark"),
        ("clipfit cache / CLIP_benchmark", "clipfit, cache", "CLIP_benchmark"),
        ("nvjpeg pass / first pass", "clipfit, nvjpeg pass", "clipfit, first pass"),
    ]
    for label, a, b in pairs:
        if a in summary and b in summary:
            ratios[label] = summary[a]["median"] / summary[b]["median"]
            print(f"{label:<32} {ratios[label]:.2f}x")
    same = len({round(v, 4) for k, v in accuracy.items() if "nvjpeg" not in k}) <= 1
    print(f"accuracies of the PIL variants {'agree' if same else 'DIFFER'}; cache entry {cache_bytes / 1e6:.1f} MB")
    if args.json:
        out = {
            "args": vars(args),
            "machine": {**machine, "load_after": load_after, "platform": platform.platform(), "cpus": os.cpu_count()},
            "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__, "python": sys.version},
            "device": str(device),
            "precision": precision,
            "workers": workers,
            "threads": torch.get_num_threads(),
            "images_per_s": summary,
            "rounds": rates,
            "accuracy": accuracy,
            "stats": stats,
            "ratios": ratios,
            "cache_bytes": cache_bytes,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
