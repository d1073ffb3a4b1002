"""Training crops from the original images (the default) against the crop-size cache (``--train-cache crop-size``).

On a fixture of real-size JPEGs (500x375, ImageNet's most common size; smooth 1/f colour fields with
edges and grain, so that they compress like photographs), this measures both pipelines of
:class:`clipfit.data.loaders.TrainBatches` at ViT-B/16's input (224 px, bicubic, scale 0.08-1):

  parts      per image, in this process on one thread: reading the file, decoding it, cutting a view
             from the original and from the cached copy, decoding into the cache
  loader     images per second of ``TrainBatches.loader`` over whole epochs of the fixture (batch 32, its
             last incomplete batch dropped) with 0, 1 and 2 DataLoader workers (0: the main process does
             the work), and per worker; the epoch time (worker start-up included, as training sees it);
             the crop-size cache's one-off decoding before the first epoch
  memory     what each pipeline holds: the decoded cache (counted exactly), or nothing; with the two
             alternatives that were considered (the encoded files, the images decoded at full size)
             per image and scaled to 16-shot ImageNet (16,000 images)
  views      the share of training views upsampled 2x or more (the crop's side, geometric mean of its
             two sides in the pixels it is cut from, at most half the output's) and the mean real
             detail of a view (that side in source pixels, at most the output's 224), over the views
             the pipelines draw (their own crop boxes, recorded while they cut them)
  step       the ViT-B/16 training step that the loader must feed, from step.py's recorded results
             (CPU and H200), as images per second, and how many workers keep up with it

Timings are medians over ``--repeats`` epochs, interleaved between the pipelines and worker counts
so that load that drifts hits all alike. The machine must be quiet: before timing, the script waits
(up to ``--wait`` seconds) for the 1-minute load average to fall below ``--max-load`` and stops if it
does not. torch runs on ``--threads`` threads in this process (DataLoader workers use one each).

    python benchmarks/crops.py --json benchmarks/results/cpu-crops.json
    python benchmarks/crops.py --smoke            # 16 small-batch images, one round (what the test runs)
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script from a checkout: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image, ImageDraw

from clipfit.data import transforms
from clipfit.data.base import FileReader, Sample
from clipfit.data.loaders import TRAIN_CACHES, AugmentedImages, TrainBatches
from clipfit.data.transforms import decode_for_cache, image_tensor, train_augment
from clipfit.models import PreprocessSpec

RESULTS = Path(__file__).resolve().parent / "results"
# ViT-B/16's preprocessing (open_clip's OpenAI config) and the paper's crop scale
SPEC = PreprocessSpec(
    size=224,
    mean=(0.48145466, 0.4578275, 0.40821073),
    std=(0.26862954, 0.26130258, 0.27577711),
    interpolation="bicubic",
)
SCALE = (0.08, 1.0)
IMAGENET_16_SHOT = 16_000  # 16 shots x 1000 classes
MIB = 2**20


# ---------------------------------------------------------------------------- the fixture


def photo(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A photograph-like image: a colour field with a 1/f amplitude spectrum, a few hard-edged shapes, grain."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / max(width, height))
    mixing = rng.normal(0.0, 1.0, (3, 3)) + 2.0 * np.eye(3)  # correlated colour channels, as in photographs
    phases = [np.exp(2j * np.pi * rng.random(amplitude.shape)) for _ in range(3)]
    noise = np.stack([np.fft.irfft2(amplitude * phase, s=(height, width)) for phase in phases])
    colour = np.einsum("ck,khw->hwc", mixing, noise)
    colour = (colour - colour.mean()) / (colour.std() + 1e-9) * 45.0 + rng.uniform(90, 160, 3)
    image = Image.fromarray(colour.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1, y1 = x0 + rng.integers(20, width // 2), y0 + rng.integers(20, height // 2)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 6.0, (height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def make_fixture(folder: Path, count: int, width: int, height: int) -> list[Path]:
    """``count`` JPEGs (quality 90) in ``folder``, made once and reused (their content depends only on the index)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.jpg"
        if not path.is_file():
            photo(width, height, np.random.default_rng(i)).save(path, quality=90)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------- measuring


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def wait_for_quiet(max_load: float, wait: float) -> float:
    """Wait until the 1-minute load average is below ``max_load``; the load found, or SystemExit after ``wait`` s."""
    deadline = time.time() + wait
    while (load := load_average()) >= max_load:
        if time.time() > deadline:
            raise SystemExit(
                f"the machine is busy (1-minute load average {load:.2f} >= {max_load}); not timing under load"
            )
        print(f"load average {load:.2f}: waiting for a quiet machine ...", flush=True)
        time.sleep(20)
    return load


def per_image_ms(fn: Callable[[int], object], n: int, passes: int) -> float:
    """Median over ``passes`` of the mean milliseconds of ``fn(i)`` for i < n."""
    times = []
    for _ in range(passes):
        started = time.perf_counter()
        for i in range(n):
            fn(i)
        times.append((time.perf_counter() - started) / n * 1e3)
    return statistics.median(times)


def parts(paths: list[Path], n: int, passes: int) -> dict[str, float]:
    """Milliseconds per image of each part of making a view, on this process's threads."""
    encoded = [p.read_bytes() for p in paths[:n]]
    originals = [image_tensor(Image.open(io.BytesIO(b))) for b in encoded]
    cached = [decode_for_cache(Image.open(io.BytesIO(b)), SPEC) for b in encoded]

    def view(images: list[torch.Tensor]) -> Callable[[int], object]:
        return lambda i: train_augment(images[i], SPEC, SCALE, torch.Generator().manual_seed(i))

    return {
        "read file": per_image_ms(lambda i: paths[i].read_bytes(), n, passes),
        "decode JPEG": per_image_ms(lambda i: image_tensor(Image.open(io.BytesIO(encoded[i]))), n, passes),
        "view from the original": per_image_ms(view(originals), n, passes),
        "view from the crop-size copy": per_image_ms(view(cached), n, passes),
        "decode into the crop-size cache": per_image_ms(
            lambda i: decode_for_cache(Image.open(io.BytesIO(encoded[i])), SPEC), n, passes
        ),
    }


@dataclass
class Loader:
    """One pipeline with one worker count, and its timed epochs."""

    cache: str
    workers: int
    batches: TrainBatches
    loader: torch.utils.data.DataLoader | None = None
    startup_s: float = 0.0  # building the loader (the crop-size cache decodes every image here)
    epochs_s: list[float] = field(default_factory=list)

    def build(self) -> None:
        started = time.perf_counter()
        self.loader = self.batches.loader(self.workers)
        self.startup_s = time.perf_counter() - started

    def epoch(self, epoch: int) -> None:
        self.batches.sampler.set_epoch(epoch)
        started = time.perf_counter()
        for _ in self.loader:
            pass
        self.epochs_s.append(time.perf_counter() - started)

    def images_per_epoch(self) -> int:
        return len(self.batches.sampler) * self.batches.sampler.global_batch_size


def held_bytes(loader: Loader) -> int:
    """Bytes of decoded images the pipeline keeps (the crop-size cache's tensors; none by default)."""
    dataset = loader.loader.dataset
    return sum(t.numel() * t.element_size() for t in dataset.images) if isinstance(dataset, AugmentedImages) else 0


@contextmanager
def recorded_sides(sides: list[float]):
    """Record the side (geometric mean, source pixels) of every crop box a pipeline draws in this process."""
    draw = transforms._crop_params

    def recording(height, width, scale, g):
        i, j, h, w = draw(height, width, scale, g)
        sides.append(math.sqrt(h * w))
        return i, j, h, w

    transforms._crop_params = recording
    try:
        yield
    finally:
        transforms._crop_params = draw


def view_statistics(samples, reader, cache: str, batch_size: int, batches: int) -> dict[str, float]:
    """Upsampling and real detail of the views of the run's first ``batches`` batches, as the pipeline cuts them."""
    sides: list[float] = []
    with recorded_sides(sides):
        for _ in TrainBatches(samples, reader, SPEC, SCALE, batch_size, seed=1, cache=cache).first(batches):
            pass
    return {
        "views": len(sides),
        "upsampled_2x_share": sum(side <= SPEC.size / 2 for side in sides) / len(sides),
        "mean_detail_px": statistics.fmean(min(side, SPEC.size) for side in sides),
        "mean_source_px_per_output_px": statistics.fmean(min(side / SPEC.size, 1.0) for side in sides),
    }


def recorded_steps() -> dict[str, dict]:
    """ViT-B/16's clipfit step (batch 32, 100 classes) as step.py recorded it, per machine."""
    steps = {}
    for machine, file in (("CPU (2 cores, fp32)", "cpu-main.json"), ("H200 (bf16)", "gpu/main.json")):
        path = RESULTS / file
        if path.is_file():
            record = json.loads(path.read_text())
            step = record["steps"]["clipfit"]["median_s"]
            batch = record["settings"]["batch_size"]
            steps[machine] = {"file": f"benchmarks/results/{file}", "step_s": step, "images_per_s": batch / step}
    return steps


# ---------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=800, help="fixture images (default 800: 16 shots x 50 classes)")
    p.add_argument("--size", default="500x375", help="fixture image size WxH (default 500x375)")
    p.add_argument("--fixture", type=Path, help="folder of the fixture (default: a folder in the temp dir, reused)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader workers (default 0 1 2)")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per pipeline and worker count (default 3)")
    p.add_argument("--parts-images", type=int, default=100, help="images timed per part (default 100)")
    p.add_argument("--view-batches", type=int, default=100, help="batches whose views are measured (default 100)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in this process (default 1)")
    p.add_argument("--max-load", type=float, default=0.7, help="time only below this 1-minute load (default 0.7)")
    p.add_argument("--wait", type=float, default=900, help="seconds to wait for a quiet machine (default 900)")
    p.add_argument("--json", metavar="FILE", help="also write every number to this JSON file")
    p.add_argument("--smoke", action="store_true", help="16 images, batch 8, 0 and 1 workers, one round, no load check")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.images, args.batch_size, args.workers, args.repeats = 16, 8, [0, 1], 1
        args.parts_images, args.view_batches = 4, 4
    width, height = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TQDM_DISABLE", "1")
    fixture = args.fixture or Path(tempfile.gettempdir()) / f"clipfit-crops-{width}x{height}"
    paths = make_fixture(fixture, args.images, width, height)
    samples = [Sample(p.name, i % 50, f"class {i % 50}") for i, p in enumerate(paths)]
    reader = FileReader(fixture)
    file_bytes = sum(p.stat().st_size for p in paths)

    load_before = load_average() if args.smoke else wait_for_quiet(args.max_load, args.wait)
    part_ms = parts(paths, min(args.parts_images, len(paths)), 3)
    loaders = [
        Loader(cache, workers, TrainBatches(samples, reader, SPEC, SCALE, args.batch_size, seed=1, cache=cache))
        for cache in TRAIN_CACHES
        for workers in args.workers
    ]
    for loader in loaders:
        loader.build()
    for epoch in range(args.repeats):  # interleaved: one epoch of every configuration per round
        for loader in loaders:
            loader.epoch(epoch)
    load_after = load_average()
    views = {c: view_statistics(samples, reader, c, args.batch_size, args.view_batches) for c in TRAIN_CACHES}
    steps = recorded_steps()

    rows = []
    for loader in loaders:
        epoch_s = statistics.median(loader.epochs_s)
        rate = loader.images_per_epoch() / epoch_s
        rows.append(
            {
                "cache": loader.cache,
                "workers": loader.workers,
                "epoch_s": epoch_s,
                "epochs_s": loader.epochs_s,
                "images_per_s": rate,
                "images_per_s_per_worker": rate / max(1, loader.workers),
                "startup_s": loader.startup_s,
                "held_bytes": held_bytes(loader),
            }
        )
    per_image = {
        "encoded files": file_bytes / len(paths),
        "decoded at full size": 3 * width * height,
        "crop-size cache": statistics.fmean(r["held_bytes"] for r in rows if r["cache"] == "crop-size") / len(paths),
        "none": 0.0,
    }

    print(
        f"{len(paths)} JPEGs of {width}x{height} (mean {file_bytes / len(paths) / 1024:.0f} KiB) in {fixture}; "
        f"views {SPEC.size} px, scale {SCALE[0]}-{SCALE[1]}, bicubic; batch {args.batch_size}; torch threads "
        f"{torch.get_num_threads()}; median of {args.repeats} epochs"
    )
    print(f"load average (1 min) before {load_before:.2f}, after {load_after:.2f}")
    print("per image, one thread (ms):  " + ", ".join(f"{k} {v:.2f}" for k, v in part_ms.items()))
    print(f"{'pipeline':<12}{'workers':>8}{'images/s':>10}{'per worker':>12}{'epoch s':>9}{'start-up s':>12}")
    for r in rows:
        print(
            f"{r['cache']:<12}{r['workers']:>8}{r['images_per_s']:>10.0f}{r['images_per_s_per_worker']:>12.0f}"
            f"{r['epoch_s']:>9.2f}{r['startup_s']:>12.2f}"
        )
    print("memory held, per image and for 16-shot ImageNet (16,000 images):")
    for name, size in per_image.items():
        print(f"  {name:<22}{size / 1024:>8.0f} KiB{size * IMAGENET_16_SHOT / 2**30:>8.2f} GiB")
    print(f"{'views':<12}{'upsampled >= 2x':>17}{'mean detail px':>16}{'source px / output px':>23}")
    for cache, v in views.items():
        print(
            f"{cache:<12}{v['upsampled_2x_share']:>16.1%} {v['mean_detail_px']:>15.1f}"
            f"{v['mean_source_px_per_output_px']:>23.3f}   ({v['views']} views)"
        )
    keeps_up = {}
    for machine, step in steps.items():
        needed = {}
        for cache in TRAIN_CACHES:
            best = max(r["images_per_s_per_worker"] for r in rows if r["cache"] == cache and r["workers"] > 0)
            needed[cache] = math.ceil(step["images_per_s"] / best) if best > 0 else None
        keeps_up[machine] = {**step, "workers_needed": needed}
        print(
            f"ViT-B/16 step on {machine}: {step['step_s']:.3f} s, {step['images_per_s']:.0f} images/s to feed; "
            + ", ".join(f"{c}: {n} worker(s) at this machine's per-worker rate" for c, n in needed.items())
        )

    if args.json:
        record = {
            "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "json"},
            "fixture": {"images": len(paths), "width": width, "height": height, "file_bytes": file_bytes},
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "versions": {
                "torch": torch.__version__,
                "pillow": Image.__version__,
                "python": platform.python_version(),
            },
            "parts_ms": part_ms,
            "loaders": rows,
            "memory_bytes_per_image": per_image,
            "views": views,
            "steps": keeps_up,
        }
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
