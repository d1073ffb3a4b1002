"""Wait until the machine is quiet before timing anything, and say so either way.

The build machine is shared: a benchmark timed beside someone's training measures the contention, not the code.
:func:`wait_for_quiet` polls until the 1-minute load average is below a threshold and the CPUs were idle over a few
seconds (from /proc/stat, which sees at once what the load average sees only after a minute), twice, a random
interval apart, so that two benchmarks waiting for the same quiet moment are unlikely to start together. It gives
up after a time limit and returns what it saw, which every benchmark prints and writes beside its numbers.
"""

from __future__ import annotations

import os
import random
import time


def load() -> float | None:
    """The 1-minute load average (None where the platform has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def fmt(value: float | None) -> str:
    """A load average as printed beside the numbers."""
    return "n/a" if value is None else f"{value:.2f}"


def _cpu_times() -> tuple[int, int] | None:
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields), idle


def busy_fraction(seconds: float = 3.0) -> float | None:
    """The share of CPU time spent working over the next ``seconds`` (None without /proc/stat)."""
    before = _cpu_times()
    time.sleep(seconds)
    after = _cpu_times()
    if before is None or after is None or after[0] == before[0]:
        return None
    return 1.0 - (after[1] - before[1]) / (after[0] - before[0])


def _quiet(threshold: float, busy_max: float) -> bool:
    current, busy = load(), busy_fraction()
    return (current is None or current < threshold) and (busy is None or busy < busy_max)


def wait_for_quiet(
    threshold: float = 0.5, max_wait_s: float = 1800.0, poll_s: float = 15.0, busy_max: float = 0.15
) -> dict:
    """Poll until the load average is below ``threshold`` and the CPUs are less than ``busy_max`` busy, seen twice
    10-40 s apart; at most ``max_wait_s`` seconds.

    Returns ``{"load_before", "busy_before", "waited_s", "quiet", "threshold"}``; ``quiet`` False means the numbers
    that follow were taken on a busy machine (the caller prints that)."""
    started = time.monotonic()
    rng = random.Random(os.getpid())
    quiet = False
    while time.monotonic() - started < max_wait_s:
        if _quiet(threshold, busy_max):
            time.sleep(rng.uniform(10, 40))
            if _quiet(threshold, busy_max):
                quiet = True
                break
        print(f"waiting for a quiet machine: load average {fmt(load())} (needs < {threshold})", flush=True)
        time.sleep(poll_s)
    waited = time.monotonic() - started
    current, busy = load(), busy_fraction(1.0)
    if not quiet:
        print(f"the machine stayed busy for {waited:.0f}s (load {fmt(current)}): timings below are under load")
    return {
        "load_before": current,
        "busy_before": None if busy is None else round(busy, 3),
        "waited_s": round(waited, 1),
        "quiet": quiet,
        "threshold": threshold,
    }
