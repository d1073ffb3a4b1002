"""Split files (CoOp's JSON format), random per-class splits, and clipfit's cache directory.

A split file is ``{"train": [...], "val": [...], "test": [...]}`` with one
``[relative image path, integer label, class name]`` entry per image (PAPER.md section 5); a
few-shot file has the same entries under ``"train"`` and ``"val"`` only. Random splits follow
CoOp: folders 50/20/30 per class (``read_and_split_data``), an official trainval set 80/20 per
class (``split_trainval``).

clipfit never writes into a user's image folder except a new ``split_fewshot/`` folder beside a
benchmark's published split file (where CoOp keeps its few-shot draws). Everything else it
generates (random splits, splits of ``folder:``/``csv:`` datasets, few-shot draws of read-only
dataset folders) goes under :func:`cache_dir`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from clipfit.data.base import DataError, Sample, check_relative

SPLITS = ("train", "val", "test")
# Seed of every random split clipfit draws (--make-split, folder:/csv: datasets); the split is
# saved on first use, so the seed only matters for the first draw.
SPLIT_SEED = 1


def cache_dir() -> Path:
    """``$CLIPFIT_CACHE``, else ``$XDG_CACHE_HOME/clipfit``, else ``~/.cache/clipfit``."""
    if os.environ.get("CLIPFIT_CACHE"):
        return Path(os.environ["CLIPFIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "clipfit"


def dataset_cache_dir(kind: str, path: Path) -> Path:
    """clipfit's own folder for one dataset folder or file: ``<cache>/datasets/<kind>-<name>-<hash>``."""
    path = Path(path).expanduser().resolve()
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    return cache_dir() / "datasets" / f"{kind}-{path.name or 'root'}-{digest}"


def write_json_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except UnicodeEncodeError as exc:
        Path(tmp).unlink(missing_ok=True)
        bad = text[max(0, exc.start - 40) : exc.end + 40].strip()
        raise DataError(
            f"cannot write {path}: a file or class name is not valid UTF-8 (near {bad!r}); rename it"
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dump_entries(splits: dict[str, Sequence[Sample]]) -> str:
    """A split or few-shot file's text: one ``[path, label, classname]`` entry per line."""
    parts = []
    for name, items in splits.items():
        lines = ",\n".join("    " + json.dumps(s.to_json(), ensure_ascii=False) for s in items)
        parts.append(f'  "{name}": [\n{lines}\n  ]' if items else f'  "{name}": []')
    return "{\n" + ",\n".join(parts) + "\n}\n"


def write_split_file(path: Path, splits: dict[str, Sequence[Sample]]) -> None:
    write_json_atomic(path, dump_entries(splits))


def read_split_file(path: Path, keys: Iterable[str] = SPLITS, any_path: bool = False) -> dict[str, list[Sample]]:
    """The entries of a split (or few-shot) file; a malformed file is named with what is wrong.

    Paths must be relative and stay inside the image folder, unless ``any_path`` (the saved split of
    a CSV dataset, whose rows may name files anywhere).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except IsADirectoryError:
        raise DataError(f"split file {path} is a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"split file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"cannot read split file {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise DataError(f"split file {path} is not valid JSON ({reason})") from None
    if not isinstance(data, dict):
        raise DataError(f"split file {path} must hold a JSON object with keys {', '.join(keys)}")
    out: dict[str, list[Sample]] = {}
    for key in keys:
        if key not in data:
            raise DataError(f"split file {path} has no '{key}' list (expected keys: {', '.join(keys)})")
        if not isinstance(data[key], list):
            raise DataError(f"split file {path}: '{key}' is {data[key]!r:.60}, not a list of entries")
        items = []
        for i, entry in enumerate(data[key]):
            valid = (
                isinstance(entry, list)
                and len(entry) == 3
                and isinstance(entry[1], int | float)
                and not isinstance(entry[1], bool)
                and float(entry[1]).is_integer()
                and isinstance(entry[2], str)
            )
            if not valid:
                raise DataError(
                    f"split file {path}: entry {i} of '{key}' is {entry!r:.200}; expected [relative path, label, "
                    "class name]"
                )
            why = check_relative(entry[0]) if not any_path else None if isinstance(entry[0], str) else "not a path"
            if why:
                raise DataError(f"split file {path}: entry {i} of '{key}' is {entry!r:.200}: {why}")
            items.append(Sample.from_json(entry))
        out[key] = items
    return out


def classnames_from_samples(samples: Iterable[Sample], source: str) -> list[str]:
    """Class names in label order from the entries; labels must be 0..n-1, one name each."""
    names: dict[int, str] = {}
    for s in samples:
        if names.setdefault(s.label, s.classname) != s.classname:
            raise DataError(f"{source}: label {s.label} has two class names, {names[s.label]!r} and {s.classname!r}")
    if not names:
        raise DataError(f"{source} lists no images")
    if min(names) < 0:
        raise DataError(f"{source}: label {min(names)} is negative; labels are 0..n-1")
    if max(names) >= len(names):  # labels 0..n-1 for n names; found without building range(max label)
        missing = [i for i in range(len(names) + 1) if i not in names][:10]
        raise DataError(
            f"{source}: labels must be 0..{len(names) - 1} for its {len(names)} class names without gaps; the largest "
            f"is {max(names)}, missing {missing}"
        )
    return [names[i] for i in range(len(names))]


def group_in_order(items: Sequence[Sample]) -> dict[int, list[Sample]]:
    groups: dict[int, list[Sample]] = {}
    for item in items:
        groups.setdefault(item.label, []).append(item)
    return groups


def min_split_size(p_train: float = 0.5, p_val: float = 0.2) -> int:
    """The fewest images of a class that CoOp's rounding splits into non-empty train, val and test."""
    for n in range(3, 1000):
        n_train, n_val = round(n * p_train), round(n * p_val)
        if n_train >= 1 and n_val >= 1 and n - n_train - n_val >= 1:
            return n
    raise ValueError(f"no class size up to 1000 splits {p_train}/{p_val} into three non-empty parts")


def split_per_class(
    groups: dict[int, list[Sample]], rng: random.Random, p_train: float = 0.5, p_val: float = 0.2, source: str = ""
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """CoOp's ``read_and_split_data``: shuffle each class, round(50%) train, round(20%) val, rest test."""
    train, val, test = [], [], []
    for label, items in groups.items():
        items = list(items)
        rng.shuffle(items)
        n_train, n_val = round(len(items) * p_train), round(len(items) * p_val)
        if n_train < 1 or n_val < 1 or len(items) - n_train - n_val < 1:
            raise DataError(
                f"{source}: class {items[0].classname!r} (label {label}) has {len(items)} images, too few to "
                f"split {p_train:.0%}/{p_val:.0%}/{1 - p_train - p_val:.0%} into train/val/test "
                f"(at least {min_split_size(p_train, p_val)} needed)"
            )
        train += items[:n_train]
        val += items[n_train : n_train + n_val]
        test += items[n_train + n_val :]
    return train, val, test


def split_trainval(
    trainval: Sequence[Sample], rng: random.Random, p_val: float = 0.2, source: str = ""
) -> tuple[list[Sample], list[Sample]]:
    """CoOp's ``split_trainval``: per class (first-appearance order), a shuffled round(20%) becomes val."""
    train, val = [], []
    for label, items in group_in_order(trainval).items():
        n_val = round(len(items) * p_val)
        if n_val < 1:
            raise DataError(f"{source}: class label {label} has {len(items)} trainval images, too few for a val split")
        order = list(range(len(items)))
        rng.shuffle(order)
        for n, i in enumerate(order):
            (val if n < n_val else train).append(items[i])
    return train, val
