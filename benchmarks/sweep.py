"""A sweep of short shapes-world runs, one after the other against ``--workers N`` CPU processes.

Each variant is the same ``clipfit-train`` command in a fresh process and a fresh output folder (so start-up,
generating the shapes world and building the model count, as they do for a user): 8 seeds of ClipFit base-to-new
on the shapes world by default, 10 epochs of 4 shots each. The sequential sweep uses torch's default threads (every
core), the pool ``cores / N`` threads per worker (``--threads K``: K for both). The script prints the wall time of
each, their ratio, whether the two summary tables agree, and how many checkpoint tensors differ (with another number
of threads per process floating-point sums split differently: last-bit differences that can flip a test image's
argmax). It waits for a quiet machine first.

    python benchmarks/sweep.py                              # 8 cells, sequential against 2 workers
    python benchmarks/sweep.py --threads 1                  # both with one thread per process: identical tensors
    python benchmarks/sweep.py --smoke --cells 2 --epochs 2 --shots 1 --model clipfit-tiny --pretrained none \
        --threads 1                                         # what the test runs (no waiting)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

from benchmarks.quiet import fmt, load, wait_for_quiet  # noqa: E402 (after the path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=8, help="seeds 1..N of one setting (default 8)")
    p.add_argument("--workers", type=int, default=2, help="worker processes of the parallel variant (default 2)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per run (default 10)")
    p.add_argument("--shots", type=int, default=4, help="shots per class (default 4)")
    p.add_argument("--model", help="clipfit-train --model (default: the shapes world's, shapes-vit-tiny)")
    p.add_argument("--pretrained", help="clipfit-train --pretrained (with --model: none for random init)")
    p.add_argument(
        "--threads",
        type=int,
        help="OMP_NUM_THREADS of both variants (torch threads per process): with the same count both give the same "
        "tensors bit for bit (default: unset, so the sequential sweep uses every core and each worker its share)",
    )
    p.add_argument("--repeats", type=int, default=1, help="rounds of both variants (default 1)")
    p.add_argument("--out", help="where the runs go (default: a folder in the temp directory)")
    p.add_argument("--max-wait", type=float, default=1800, help="seconds to wait for a quiet machine (default 1800)")
    p.add_argument("--json", metavar="FILE", help="also write every number to this JSON file")
    p.add_argument("--smoke", action="store_true", help="no waiting for a quiet machine (for the test)")
    return p


def _table(stdout: str, out: Path) -> list[str]:
    """The summary table (from its "sweep of N runs (zero-shot in brackets):" line on), run folders as OUT."""
    lines = stdout.replace(str(out), "OUT").splitlines()
    starts = [i for i, line in enumerate(lines) if line.endswith("(zero-shot in brackets):")]
    return lines[starts[-1] :] if starts else []


def _differing_tensors(a: Path, b: Path) -> tuple[int, int]:
    import torch
    from safetensors.torch import load_file

    differ = total = 0
    for ckpt in sorted(a.rglob("checkpoint.safetensors")):
        ta, tb = load_file(ckpt), load_file(b / ckpt.relative_to(a))
        total += len(ta)
        differ += sum(not torch.equal(ta[k], tb[k]) for k in ta)
    return differ, total


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(args.out or Path(os.environ.get("TMPDIR", "/tmp")) / "clipfit-bench-sweep")
    base = [sys.executable, "-m", "clipfit.cli.train", "--dataset", "shapes", "--setting", "base2new"]
    base += ["--epochs", str(args.epochs), "--shots", str(args.shots), "--seeds", *map(str, range(1, args.cells + 1))]
    base += ["--model", args.model] if args.model else []
    base += ["--pretrained", args.pretrained] if args.pretrained else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env["CLIPFIT_CACHE"] = str(root / "cache")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.pop("OMP_NUM_THREADS", None)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    variants = {"sequential": [], f"{args.workers} workers": ["--workers", str(args.workers)]}

    machine = {"load_before": load()} if args.smoke else wait_for_quiet(max_wait_s=args.max_wait)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    tables: dict[str, list[str]] = {}
    for round_ in range(args.repeats):
        for name, extra in variants.items():
            out = root / name.replace(" ", "-")
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            done = subprocess.run([*base, "--out", str(out), *extra], env=env, capture_output=True, text=True)
            seconds[name].append(time.perf_counter() - started)
            if done.returncode != 0:
                print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
                return done.returncode
            tables[name] = _table(done.stdout, out)
            print(f"round {round_ + 1}: {name:<12} {seconds[name][-1]:7.1f} s", flush=True)
    load_after = load()
    names = list(variants)
    median = {n: statistics.median(v) for n, v in seconds.items()}
    differ, total = _differing_tensors(root / names[0].replace(" ", "-"), root / names[1].replace(" ", "-"))
    same = tables[names[0]] == tables[names[1]]
    print(
        f"\n{args.cells} shapes runs ({args.epochs} epochs, {args.shots} shots), {os.cpu_count()} cores; load average "
        f"{fmt(machine['load_before'])} before, {fmt(load_after)} after"
    )
    for name in names:
        print(f"{name:<12} {median[name]:7.1f} s  ({median[name] / args.cells:.1f} s per run)")
    print(f"speed-up {median[names[0]] / median[names[1]]:.2f}x; summary tables {'identical' if same else 'DIFFER'};")
    print(f"{differ} of {total} checkpoint tensors differ in their bits (other threads per process)")
    if args.json:
        out = {
            "args": vars(args),
            "machine": {**machine, "load_after": load_after, "platform": platform.platform(), "cpus": os.cpu_count()},
            "seconds": seconds,
            "median_s": median,
            "speedup": median[names[0]] / median[names[1]],
            "tables_identical": same,
            "tensors_differing": [differ, total],
            "table": tables[names[0]],
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
