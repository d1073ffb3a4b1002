"""Wait until the machine is quiet before timing anything, and say so either way.

The build machine is shared: a benchmark timed beside someone's training measures the contention, not the code.
:func:`wait_for_quiet` polls the 1-minute load average until it drops below a threshold (or a time limit passes)
and returns what it saw, which every benchmark prints and writes beside its numbers.
"""

from __future__ import annotations

import os
import time


def load() -> float | None:
    """The 1-minute load average (None where the platform has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def fmt(value: float | None) -> str:
    """A load average as printed beside the numbers."""
    return "n/a" if value is None else f"{value:.2f}"


def wait_for_quiet(threshold: float = 0.5, max_wait_s: float = 1800.0, poll_s: float = 15.0) -> dict:
    """Poll until the load average is below ``threshold``, at most ``max_wait_s`` seconds.

    Returns ``{"load_before", "waited_s", "quiet", "threshold"}``; ``quiet`` False means the numbers that follow
    were taken on a busy machine (the caller prints that)."""
    started = time.monotonic()
    current = load()
    while current is not None and current >= threshold and time.monotonic() - started < max_wait_s:
        print(f"waiting for a quiet machine: load average {current:.2f} (>= {threshold})", flush=True)
        time.sleep(poll_s)
        current = load()
    quiet = current is None or current < threshold
    waited = time.monotonic() - started
    if not quiet:
        print(f"the machine stayed busy for {waited:.0f}s (load {current:.2f}): timings below are under load")
    return {"load_before": current, "waited_s": round(waited, 1), "quiet": quiet, "threshold": threshold}
