"""The user's own images: ``--dataset folder:PATH`` and ``--dataset csv:FILE``.

``folder:PATH`` is an image folder with one sub-folder per class (the sub-folder name is the
class name), either with ``train/``, ``test/`` and optionally ``val/`` sub-trees that each hold
the class folders, or without them, in which case clipfit splits every class 50/20/30 into
train/val/test (CoOp's rule for folder datasets, fixed seed) and saves that split file under its
cache directory, so later runs use the same images even if the folder grows. Nothing is written
into PATH.

``csv:FILE`` is a CSV file with ``path,label`` columns (a header row naming them is optional),
paths relative to the CSV's folder or absolute, and an optional ``split`` column
(``train``/``val``/``test``); without it the per-class split above is used. Labels are class
names, or integers 0..n-1 together with ``--classnames FILE`` (one name per line, label order).
``--classnames`` also renames the classes of a folder dataset (its lines in sorted folder order).
"""

from __future__ import annotations

import csv
import io
import logging
import random
from pathlib import Path

from clipfit.data.base import DataError, Dataset, FileReader, LoadOptions, Sample, read_text_file
from clipfit.data.records import DatasetRecord
from clipfit.data.sampling import FEWSHOT_DIR
from clipfit.data.splits import (
    SPLIT_SEED,
    SPLITS,
    dataset_cache_dir,
    group_in_order,
    read_split_file,
    split_per_class,
    write_split_file,
)
from clipfit.prompts import same_prompt_names

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
FOLDER_TREE = (
    "PATH/                       one sub-folder per class; its name is the class name\n"
    "|-- golden_retriever/       img001.jpg, ... (any depth; .jpg .jpeg .png .bmp .gif .webp .tif)\n"
    "`-- tabby_cat/\n"
    "or, with your own split:\n"
    "PATH/\n"
    "|-- train/golden_retriever/, train/tabby_cat/\n"
    "|-- val/...                 optional\n"
    "`-- test/golden_retriever/, test/tabby_cat/"
)
CSV_FORMAT = (
    "path,label[,split]          header row optional; paths relative to the CSV's folder or absolute\n"
    "dogs/img001.jpg,golden retriever,train\n"
    "cats/img007.jpg,tabby cat,test\n"
    "labels are class names, or integers 0..n-1 with --classnames FILE (one name per line)"
)


def _image_files(folder: Path, base: Path) -> list[str]:
    """Image files under ``folder`` (any depth, no hidden parts), relative to ``base``, sorted."""
    out = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if path.suffix.lower() in IMAGE_EXTENSIONS and not any(p.startswith(".") for p in rel.parts) and path.is_file():
            out.append(path.relative_to(base).as_posix())
    return sorted(out)


def _class_dirs(folder: Path) -> list[str]:
    return sorted(
        p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != FEWSHOT_DIR
    )


def read_classnames_file(path: str | Path, expected: int | None = None) -> list[str]:
    """One class name per line (blank lines skipped), in label order."""
    path = Path(path).expanduser()
    text = read_text_file(path, "class-name file", " (--classnames: one class name per line, label order)")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DataError(f"class-name file {path} lists no class names (one per line, label order)")
    if expected is not None and len(names) != expected:
        raise DataError(f"class-name file {path} has {len(names)} names for {expected} classes")
    return names


def check_distinct(classnames: list[str], source: str) -> None:
    """Refuse class names that give the same prompt text: their classes could not be told apart."""
    same = same_prompt_names(classnames)
    if same:
        groups = "; ".join(" and ".join(repr(n) for n in group) for group in same[:5])
        raise DataError(
            f"{source}: class names that give the same prompt text, so the model cannot tell their classes apart: "
            f"{groups}. Rename them (or give other names with --classnames)"
        )


def _saved_split(kind: str, source: Path, samples: list[Sample], classnames: list[str]) -> tuple[dict, Path]:
    """The saved per-class split of a user dataset, drawn and saved on first use."""
    saved = dataset_cache_dir(kind, source) / "split.json"
    if saved.is_file():
        splits = read_split_file(saved, any_path=kind == "csv")  # CSV rows may name files anywhere
        listed = [*splits["train"], *splits["val"], *splits["test"]]
        if any(s.label >= len(classnames) or classnames[s.label] != s.classname for s in listed):
            raise DataError(
                f"{source} now has other classes than the split saved at {saved} (made on first use); "
                "delete that file to split again"
            )
        new = {s.path for s in samples} - {s.path for s in listed}
        if new:
            logger.warning(
                "%d images of %s are not in the split saved at %s and are not used; delete it to split again",
                len(new),
                source,
                saved,
            )
        logger.info("%s: using the split saved at %s", source, saved)
        return splits, saved
    train, val, test = split_per_class(group_in_order(samples), random.Random(SPLIT_SEED), source=str(source))
    splits = {"train": train, "val": val, "test": test}
    write_split_file(saved, splits)
    logger.info("%s: split every class 50/20/30 into train/val/test; saved the split at %s", source, saved)
    return splits, saved


def _user_dataset(
    name: str,
    kind: str,
    source: Path,
    root: Path,
    classnames: list[str],
    splits: dict[str, list[Sample]],
    how: str,
    template: str,
) -> Dataset:
    if not splits["train"] and not splits["test"]:
        raise DataError(f"{source} holds no images")
    check_distinct(classnames, str(source))
    return Dataset(
        name=name,
        classnames=classnames,
        template=template,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        # a folder dataset is the files inside its folder; a CSV file names its files, anywhere
        reader=FileReader(root, any_path=kind == "csv", confine_links=kind == "folder"),
        split_source=how,
        fewshot_dir=dataset_cache_dir(kind, source) / FEWSHOT_DIR,
    )


def load_folder(path: Path, options: LoadOptions, template: str) -> Dataset:
    """``folder:PATH`` (see the module docstring), prompted with ``template``."""
    path = Path(path).expanduser().resolve()
    name = f"folder:{path}"
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "no such folder"
        raise DataError(f"{name}: {what}. A folder dataset looks like\n{FOLDER_TREE}")
    subtrees = [s for s in SPLITS if (path / s).is_dir()]
    if "train" in subtrees or "test" in subtrees:
        per_split = {s: _class_dirs(path / s) if s in subtrees else [] for s in SPLITS}
        folders = sorted(set().union(*per_split.values()))
        if per_split["train"]:
            untrained = sorted(set(folders) - set(per_split["train"]))
            if untrained:
                logger.warning("%s: classes without training images: %s", name, ", ".join(untrained[:10]))
        labels = {c: i for i, c in enumerate(folders)}
        classnames = read_classnames_file(options.classnames, len(folders)) if options.classnames else folders
        splits = {
            s: [
                Sample(rel, labels[c], classnames[labels[c]])
                for c in per_split[s]
                for rel in _image_files(path / s / c, path)
            ]
            for s in SPLITS
        }
        how = f"sub-trees {', '.join(f'{s}/' for s in subtrees)} of {path}"
    else:
        folders = _class_dirs(path)
        if not folders:
            raise DataError(f"{name} has no class sub-folders. A folder dataset looks like\n{FOLDER_TREE}")
        classnames = read_classnames_file(options.classnames, len(folders)) if options.classnames else folders
        samples = [Sample(rel, i, classnames[i]) for i, c in enumerate(folders) for rel in _image_files(path / c, path)]
        empty = [c for i, c in enumerate(folders) if not any(s.label == i for s in samples)]
        if empty:
            raise DataError(f"{name}: class folders without images: {', '.join(empty[:10])}")
        splits, saved = _saved_split("folder", path, samples, classnames)
        how = f"per-class 50/20/30 split saved at {saved}"
    return _user_dataset(name, "folder", path, path, classnames, splits, how, template)


def load_csv(file: Path, options: LoadOptions, template: str) -> Dataset:
    """``csv:FILE`` (see the module docstring), prompted with ``template``."""
    file = Path(file).expanduser().resolve()
    name = f"csv:{file}"
    if not file.is_file():
        what = "is a folder, not a CSV file" if file.is_dir() else "no such file"
        raise DataError(f"{name}: {what}. A CSV dataset looks like\n{CSV_FORMAT}")
    text = read_text_file(file, "CSV file")
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []  # (line number, cells)
    try:
        for row in reader:
            if row and any(cell.strip() for cell in row):
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise DataError(f"{file} line {reader.line_num}: not a CSV row ({exc})") from None
    if not rows:
        raise DataError(f"{name} is empty. A CSV dataset looks like\n{CSV_FORMAT}")
    columns = _csv_header(file, rows[0][1])
    if columns is not None:
        rows = rows[1:]
        if not rows:
            raise DataError(f"{file} holds a header row but no images. A CSV dataset looks like\n{CSV_FORMAT}")
    else:
        columns = {"path": 0, "label": 1} | ({"split": 2} if len(rows[0][1]) > 2 else {})
    records = []
    for number, row in rows:
        try:
            cells = {k: row[i].strip() for k, i in columns.items()}
        except IndexError:
            raise DataError(f"{file} line {number}: expected columns path,label[,split], got {row!r:.200}") from None
        for column in ("path", "label"):
            if not cells[column]:
                raise DataError(f"{file} line {number}: the {column} is empty ({row!r:.200})")
        if "split" in cells and cells["split"] not in SPLITS:
            raise DataError(f"{file} line {number}: split {cells['split']!r} is not one of train, val, test")
        records.append((number, cells))
    seen: dict[str, int] = {}
    for number, cells in records:  # one image twice could land in train and test (or under two labels)
        if cells["path"] in seen:
            raise DataError(
                f"{file} lines {seen[cells['path']]} and {number} both list {cells['path']!r}; each image once"
            )
        seen[cells["path"]] = number
    raw = [cells["label"] for _, cells in records]
    if all(label.lstrip("-").isdigit() for label in raw):
        if not options.classnames:
            raise DataError(f"{file} has integer labels: give their names with --classnames FILE (one per line)")
        classnames = read_classnames_file(options.classnames)
        labels = [int(label) for label in raw]
        bad = [(n, label) for (n, _), label in zip(records, labels, strict=True) if not 0 <= label < len(classnames)]
        if bad:
            raise DataError(f"{file} line {bad[0][0]}: label {bad[0][1]} is outside 0..{len(classnames) - 1}")
    else:
        classnames = sorted(set(raw))
        if options.classnames:
            raise DataError(f"{file} labels are class names already; --classnames is only for integer labels")
        index = {c: i for i, c in enumerate(classnames)}
        labels = [index[label] for label in raw]
    samples = [
        Sample(cells["path"], label, classnames[label]) for (_, cells), label in zip(records, labels, strict=True)
    ]
    if "split" in columns:
        splits = {s: [x for x, (_, cells) in zip(samples, records, strict=True) if cells["split"] == s] for s in SPLITS}
        how = f"split column of {file}"
    else:
        splits, saved = _saved_split("csv", file, samples, classnames)
        how = f"per-class 50/20/30 split saved at {saved}"
    return _user_dataset(name, "csv", file, file.parent, classnames, splits, how, template)


# Column names a header row may use (lower case), for the path, label and split columns.
CSV_COLUMNS = {
    "path": ("path", "file", "filename", "file_name", "filepath", "file_path", "image", "image_path", "img"),
    "label": ("label", "class", "classname", "class_name", "category", "target"),
    "split": ("split", "subset"),
}


def _csv_header(file: Path, row: list[str]) -> dict[str, int] | None:
    """The columns named by ``row`` when it is a header row, else None (the row is data: path,label[,split]).

    A row is a header when one of its cells is a known column name and its first cell is not an existing
    file; a header needs a path and a label column.
    """
    cells = [c.strip().lower() for c in row]
    named = {key: i for key, names in CSV_COLUMNS.items() for i, c in enumerate(cells) if c in names}
    if not named or (file.parent / row[0].strip()).is_file():
        return None
    lacking = [key for key in ("path", "label") if key not in named]
    if lacking:
        known = "; ".join(f"{key}: {', '.join(names)}" for key, names in CSV_COLUMNS.items())
        raise DataError(f"{file} line 1 is a header without a {' or '.join(lacking)} column ({known})")
    return named


def read_folder(record: DatasetRecord, root: Path | None, options: LoadOptions) -> Dataset:
    """The reader of a ``folder:PATH`` record (PATH is in its name; no data root)."""
    return load_folder(Path(record.name.removeprefix("folder:")), options, record.template)


def read_csv(record: DatasetRecord, root: Path | None, options: LoadOptions) -> Dataset:
    """The reader of a ``csv:FILE`` record (FILE is in its name; no data root)."""
    return load_csv(Path(record.name.removeprefix("csv:")), options, record.template)
