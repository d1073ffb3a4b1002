"""The dataset registry: names -> readers. ``--dataset NAME`` resolves here.

Registered: the shapes world, the 11 CoOp benchmarks and the 4 ImageNet variants
(:mod:`clipfit.data.benchmarks`). Besides names, ``folder:PATH`` and ``csv:FILE`` read the user's
own images (:mod:`clipfit.data.custom`), and the groups ``all`` (the 11 benchmarks) and
``imagenet-variants`` expand to several names in lists of datasets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from clipfit.data import benchmarks, custom, shapes
from clipfit.data.base import DataError, Dataset, LoadOptions


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one dataset."""

    name: str
    load: Callable[[Path | None, LoadOptions], Dataset]  # (data root, options) -> dataset
    needs_root: bool = True  # False for generated datasets and folder:/csv: datasets
    test_only: bool = False  # ImageNet variants: evaluation only
    description: str = ""


_REGISTRY: dict[str, DatasetSpec] = {}
USER_PREFIXES = ("folder:", "csv:")
GROUPS: dict[str, tuple[str, ...]] = {
    "all": benchmarks.BENCHMARKS,
    "imagenet-variants": benchmarks.IMAGENET_VARIANTS,
}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset (names are unique)."""
    if spec.name in _REGISTRY or spec.name in GROUPS or spec.name.startswith(USER_PREFIXES):
        raise ValueError(f"dataset '{spec.name}' is already registered or reserved")
    _REGISTRY[spec.name] = spec
    return spec


register(
    DatasetSpec(
        "shapes", lambda root, options: shapes.load(root), needs_root=False, description="the built-in shapes world"
    )
)
register(
    DatasetSpec(
        "shapes-pretrain",
        lambda root, options: shapes.load(root, domain="pretrain"),
        needs_root=False,
        description="the shapes world's pretraining domain (for checks; zero-shot is near 100%)",
    )
)
for _name, _loader in benchmarks.LOADERS.items():
    _layout = benchmarks.LAYOUTS[_name]
    register(
        DatasetSpec(
            _name,
            _loader,
            test_only=_layout.test_only,
            description=f"{_layout.title} ({_layout.folder}/ under --data-root)",
        )
    )


def dataset_names() -> list[str]:
    return list(_REGISTRY)


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


def get_spec(name: str) -> DatasetSpec:
    """The spec of a registered dataset or of a ``folder:``/``csv:`` path; an unknown name lists the known ones."""
    if name.startswith("folder:"):
        path = Path(name[len("folder:") :])
        return DatasetSpec(name, lambda root, options: custom.load_folder(path, options), needs_root=False)
    if name.startswith("csv:"):
        path = Path(name[len("csv:") :])
        return DatasetSpec(name, lambda root, options: custom.load_csv(path, options), needs_root=False)
    try:
        return _REGISTRY[name]
    except KeyError:
        groups = ", ".join(f"{g} ({len(v)} datasets)" for g, v in GROUPS.items())
        raise DataError(
            f"unknown dataset '{name}'; known datasets: {', '.join(_REGISTRY)}; groups: {groups}; "
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
    spec = get_spec(name)
    if classnames and not name.startswith(USER_PREFIXES):
        raise DataError(f"--classnames applies to folder:/csv: datasets; '{name}' has its own class names")
    root = Path(data_root).expanduser() if data_root is not None else None
    if spec.needs_root and root is None and name not in benchmarks.LAYOUTS:
        raise DataError(f"dataset '{name}' needs --data-root (the folder that holds the dataset folders)")
    return spec.load(root, LoadOptions(make_split=make_split, classnames=classnames))
