"""The dataset registry: names -> readers. ``--dataset NAME`` resolves here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clipfit.data import shapes
from clipfit.data.base import DataError, Dataset


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one dataset."""

    name: str
    load: Callable[[Path | None], Dataset]  # data root -> dataset
    needs_root: bool = True  # False for generated datasets
    test_only: bool = False  # ImageNet variants: evaluation only
    description: str = ""


_REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset (names are unique)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"dataset '{spec.name}' is already registered")
    _REGISTRY[spec.name] = spec
    return spec


register(DatasetSpec("shapes", shapes.load, needs_root=False, description="the built-in shapes world (target domain)"))
register(
    DatasetSpec(
        "shapes-pretrain",
        lambda root: shapes.load(root, domain="pretrain"),
        needs_root=False,
        description="the shapes world's pretraining domain (for checks; zero-shot is near 100%)",
    )
)


def dataset_names() -> list[str]:
    return list(_REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    """The spec of a registered dataset; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DataError(f"unknown dataset '{name}'; known datasets: {', '.join(_REGISTRY)}") from None


def load_dataset(name: str, data_root: str | Path | None = None) -> Dataset:
    """Read a dataset's class names and splits (images are read later, lazily)."""
    spec = get_spec(name)
    if spec.needs_root and data_root is None:
        raise DataError(f"dataset '{name}' needs --data-root (the folder that holds the dataset folders)")
    return spec.load(Path(data_root).expanduser() if data_root is not None else None)
