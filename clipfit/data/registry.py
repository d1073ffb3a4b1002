"""The dataset registry: ``--dataset NAME`` -> the dataset's record, and reading it.

Registered: the records of :mod:`clipfit.data.catalog` (the shapes world, the 11 CoOp benchmarks and
the 4 ImageNet variants). Besides names, ``folder:PATH`` and ``csv:FILE`` read the user's own images
(:mod:`clipfit.data.custom`) through a record built on the fly with the record defaults, and the
groups ``all`` (the 11 benchmarks) and ``imagenet-variants`` expand to several names in lists of
datasets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from clipfit.data import custom
from clipfit.data.base import DataError, Dataset, LoadOptions
from clipfit.data.catalog import GROUPS, RECORDS
from clipfit.data.records import DatasetRecord
from clipfit.prompts import same_prompt_names

logger = logging.getLogger(__name__)

USER_PREFIXES = ("folder:", "csv:")


def dataset_names() -> list[str]:
    """The registered dataset names, in the catalog's order."""
    return list(RECORDS)


def canonical_name(name: str) -> str:
    """``folder:``/``csv:`` names with an absolute path (so run directories can be resumed from anywhere)."""
    for prefix in USER_PREFIXES:
        if name.startswith(prefix):
            return prefix + str(Path(name[len(prefix) :]).expanduser().resolve())
    return name


def expand_names(names: Iterable[str]) -> list[str]:
    """Dataset names with the groups (``all``, ``imagenet-variants``) expanded, duplicates dropped."""
    out: list[str] = []
    for name in names:
        for item in GROUPS.get(name, (name,)):
            item = canonical_name(item)
            if item not in out:
                out.append(item)
    return out


def dataset_slug(name: str) -> str:
    """A dataset's folder name in run directories: ``folder:/x/pets`` -> ``folder-pets``."""
    for prefix in USER_PREFIXES:
        if name.startswith(prefix):
            path = Path(name[len(prefix) :])
            return f"{prefix[:-1]}-{(path.stem if prefix == 'csv:' else path.name) or 'root'}"
    return name.replace(":", "_").replace("/", "_")


def get_spec(name: str) -> DatasetRecord:
    """The record of a registered dataset, or one built for ``folder:PATH``/``csv:FILE`` with the record
    defaults (template, epochs, few-shot lambda), the all-classes setting and validation every epoch; an
    unknown name lists the known ones."""
    for prefix, reader in (("folder:", custom.read_folder), ("csv:", custom.read_csv)):
        if name.startswith(prefix):
            # your own images: every class trained and tested (base-to-new on request), validation each epoch
            return DatasetRecord(name=name, title=name, reader=reader, needs_root=False, setting="fewshot", val_every=1)
    try:
        return RECORDS[name]
    except KeyError:
        groups = ", ".join(f"{g} ({len(v)} datasets)" for g, v in GROUPS.items())
        raise DataError(
            f"unknown dataset '{name}'; known datasets: {', '.join(RECORDS)}; groups: {groups}; "
            "or your own images as folder:PATH (one sub-folder per class) or csv:FILE (path,label columns)"
        ) from None


def load_dataset(
    name: str, data_root: str | Path | None = None, *, make_split: bool = False, classnames: str | None = None
) -> Dataset:
    """Read a dataset's class names and splits (images are read later, lazily).

    Args:
        name: a registered name, ``folder:PATH`` or ``csv:FILE``.
        data_root: the folder that holds the benchmark folders (CoOp layout).
        make_split: draw (once) and use a random split when a benchmark's published split file is missing.
        classnames: a class-name file for ``folder:``/``csv:`` datasets.
    """
    record = get_spec(name)
    if classnames and not name.startswith(USER_PREFIXES):
        raise DataError(f"--classnames applies to folder:/csv: datasets; '{name}' has its own class names")
    root = Path(data_root).expanduser() if data_root is not None else None
    # A record with a folder says itself which folder it needs, with its expected tree.
    if record.needs_root and root is None and not record.folder:
        raise DataError(f"dataset '{name}' needs --data-root (the folder that holds the dataset folders)")
    dataset = record.load(root, LoadOptions(make_split=make_split, classnames=classnames))
    if len(dataset.classnames) < 2:
        raise DataError(
            f"dataset '{name}' has {len(dataset.classnames)} class ({dataset.split_source}); a classifier needs at "
            "least 2 (an accuracy among one class is 100% whatever the model does)"
        )
    same = same_prompt_names(dataset.classnames)
    if same:  # folder:/csv: data refuses these (clipfit.data.custom); a benchmark keeps its published names
        logger.warning(
            "%s: %d groups of class names give the same prompt text, so the model cannot tell those classes apart "
            "(e.g. %s); kept, as these are the dataset's published names",
            name,
            len(same),
            " and ".join(repr(n) for n in same[0]),
        )
    return dataset
