"""Images checked before any model work: every bad file found at once, not by a DataLoader worker mid-run.

A corrupt, empty, misnamed or oversized image used to be met only when a worker decoded it, after
the model was built, its weights fetched and zero-shot evaluation begun. :func:`find_bad_images`
opens every image of a list at the header level (:meth:`clipfit.data.base.FileReader.check`: the
path stays where it must, the file is a regular file, PIL recognises it, its declared size is below
PIL's decompression-bomb limit, and for PNG its chunk checksums hold) in parallel threads, with a
progress bar on a terminal. Measured on one core: about 50 us per JPEG and 300 us per PNG of
500x375 pixels, so the 50,000 test images of ImageNet take seconds; no verdict is cached.

:func:`check_images` is what a run calls (:func:`clipfit.data.prepare.prepare_data`): it stops with
the list of bad files, or, when the user asked to skip them, returns them so the run can leave them
out and record them. Datasets without files (the generated shapes world) have nothing to check.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tqdm import tqdm

from clipfit.data.base import DataError, ImageReader, Sample

logger = logging.getLogger(__name__)

SHOWN = 10  # bad files listed in an error (the count says how many more)


@dataclass(frozen=True)
class BadImage:
    """An image that cannot be used, and why."""

    path: str  # as the split lists it (relative to the image folder, or as the CSV names it)
    reason: str  # why, in a few words (FileReader.check)

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


def image_check(reader: ImageReader) -> Callable[[str], str | None] | None:
    """The header-level check of a reader's images, or None when the reader has no files (generated data)."""
    check = getattr(reader, "check", None)
    return check if callable(check) else None


def find_bad_images(paths: Sequence[str], reader: ImageReader, desc: str = "check images") -> list[BadImage]:
    """The images among ``paths`` that the reader cannot use, in list order (each path checked once)."""
    check = image_check(reader)
    unique = list(dict.fromkeys(paths))
    if check is None or not unique:
        return []
    workers = min(32, 4 * (os.cpu_count() or 1), len(unique))  # I/O-bound: more threads than cores
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clipfit-check") as pool:
        verdicts = list(tqdm(pool.map(check, unique), total=len(unique), desc=desc, disable=None, leave=False))
    return [BadImage(path, reason) for path, reason in zip(unique, verdicts, strict=True) if reason is not None]


def check_images(
    groups: dict[str, Sequence[Sample]], reader: ImageReader, dataset: str, skip: bool, flag: str = "--skip-bad-images"
) -> list[BadImage]:
    """Check the images of every group (``{"few-shot train": [...], "test": [...]}``) before any model work.

    Returns the bad images when ``skip`` is set (the caller leaves them out), else an empty list.

    Raises:
        DataError: when images are bad and ``skip`` is not set: the first :data:`SHOWN` with their
            reasons, how many there are in each group, and the way out (``flag``).
    """
    paths = [s.path for samples in groups.values() for s in samples]
    bad = find_bad_images(paths, reader, desc=f"check {dataset} images")
    if not bad:
        return []
    root = getattr(reader, "root", "the image folder")
    bad_paths = {b.path for b in bad}
    counts = ", ".join(
        f"{sum(1 for s in samples if s.path in bad_paths)} of {len(samples)} {name}" for name, samples in groups.items()
    )
    if skip:
        logger.warning(
            "%s: leaving out %d images that cannot be read (%s), as %s asks; the run is marked not comparable",
            dataset,
            len(bad),
            counts,
            flag,
        )
        for item in bad[:SHOWN]:
            logger.debug("left out %s: %s", item.path, item.reason)
        return bad
    shown = "\n".join(f"  {item.path}: {item.reason}" for item in bad[:SHOWN])
    more = f"\n  ... and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    plural = "s" if len(bad) > 1 else ""
    raise DataError(
        f"{dataset}: {len(bad)} image{plural} cannot be read ({counts}); nothing was trained or evaluated. In {root}:\n"
        f"{shown}{more}\nFix or remove them, or pass {flag} to leave them out (the results are then marked not "
        "comparable)"
    )


def without(samples: Sequence[Sample], bad: Sequence[BadImage]) -> list[Sample]:
    """``samples`` without the bad images."""
    paths = {b.path for b in bad}
    return [s for s in samples if s.path not in paths]
