"""``make demo``: ClipFit against zero-shot CLIP, base-to-new on the built-in shapes world.

Trains the ClipFit recipe on 16 shots of the 32 base classes (seed 1) with the paper's settings,
evaluates Base/New/HM before and after, and prints the table and the run directory.
"""

from __future__ import annotations

import argparse
import sys
import time

from clipfit.cli import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipfit.demo", description=__doc__)
    parser.add_argument("--out", default="runs/demo", help="root of the demo's run directory (default runs/demo)")
    args = parser.parse_args(argv)
    started = time.time()
    status = train.main(
        [
            "--dataset",
            "shapes",
            "--setting",
            "base2new",
            "--shots",
            "16",
            "--seed",
            "1",
            "--out",
            args.out,
            "--overwrite",
        ]
    )
    print(f"demo finished in {time.time() - started:.0f}s")
    return status


if __name__ == "__main__":
    sys.exit(main())
