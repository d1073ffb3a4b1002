"""Bad input, one row each: every flag that takes a value and every file the tools read, broken on purpose.

Each row is a command line (clipfit-train, clipfit-eval, clipfit-analyze) against a world of small,
valid inputs of which the row breaks one: a flag value, or the contents of a file (made by ``setup``
on the row's own copy). Every row must end with exit status 2 and a message on stderr that is one
paragraph, names the input and the real cause (``expect``), and holds no traceback; and nothing in
the user's data folders may change (the listing, sizes and modification times are compared before
and after; ``split_fewshot/`` is the one folder clipfit may add to a benchmark's folder, see
docs/protocols.md).

The hostile-file rows are here too: paths that leave the image folder (``../``, absolute, a symbolic
link out of a folder dataset), a FIFO named like an image (reading it would block), a decompression
bomb (a PNG declaring 10^10 pixels), and a label of 10^12 in a split file (once an allocation of
that many list items). docs/reliability.md says what each guarantees.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from fixture_trees import bomb_png, build, image
from PIL import Image

from analysis import cli as analyze_cli
from clipfit.cli import eval as eval_cli
from clipfit.cli import train

TOOLS = {"train": train.main, "eval": eval_cli.main, "analyze": analyze_cli.main}
CLASSES = ("cat", "dog", "bird", "fish")
MAX_LINES = 16  # one paragraph: the error, and where it lists things (bad files, an expected tree), the list


# ----------------------------------------------------------------------------- the world a row breaks


def folder_dataset(root: Path, classes=CLASSES, n: int = 10) -> Path:
    """``root/<class>/<i>.png``: n 8x8 images per class."""
    for label, name in enumerate(classes):
        for i in range(n):
            image(root / name / f"{i}.png", label * 10 + i)
    return root


def csv_rows(prefix: str = "imgs", classes=CLASSES, n: int = 10) -> str:
    return "".join(f"{prefix}/{c}/{i}.png,{c}\n" for c in classes for i in range(n))


@dataclass
class World:
    """A row's own inputs; ``data`` is the user's data folder (checked for changes), the rest is scratch."""

    tmp: Path
    weights: str
    finished_run: Path
    monkeypatch: pytest.MonkeyPatch
    _made: dict[str, Path] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    @property
    def folder(self) -> Path:
        if "folder" not in self._made:
            self._made["folder"] = folder_dataset(self.data / "photos")
        return self._made["folder"]

    @property
    def csv(self) -> Path:
        """``data/set/data.csv`` over ``data/set/imgs/<class>/<i>.png`` (a header row, four classes)."""
        if "csv" not in self._made:
            folder_dataset(self.data / "set" / "imgs")
            self._made["csv"] = self.data / "set" / "data.csv"
            self._made["csv"].write_text("path,label\n" + csv_rows())
        return self._made["csv"]

    @property
    def dtd(self) -> Path:
        """The miniature DTD tree (3 classes) under ``data/``; returns its dataset folder."""
        if "dtd" not in self._made:
            self._made["dtd"] = build(self.data, "dtd").folder
        return self._made["dtd"]

    @property
    def split_file(self) -> Path:
        return self.dtd / "split_zhou_DescribableTextures.json"

    @property
    def run(self) -> Path:
        """A copy of a finished tiny run (outside the data folder)."""
        if "run" not in self._made:
            self._made["run"] = self.tmp / "runs" / "run"
            shutil.copytree(self.finished_run, self._made["run"])
        return self._made["run"]

    def file(self, name: str, content: str | bytes) -> Path:
        """A file the user hands in, in the data folder."""
        path = self.data / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        return path

    def edit_split(self, change: Callable[[dict], None]) -> None:
        split = json.loads(self.split_file.read_text())
        change(split)
        self.split_file.write_text(json.dumps(split))

    def edit_json(self, path: Path, change: Callable[[dict], None]) -> None:
        record = json.loads(path.read_text())
        change(record)
        path.write_text(json.dumps(record))

    def read_only(self, path: Path) -> Path:
        """A folder clipfit cannot write: chmod 555, and as root (which chmod does not stop) a refusing os.access."""
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o555)
        if os.geteuid() == 0:
            real_access = os.access
            self.monkeypatch.setattr(
                "clipfit.files.os.access", lambda p, mode: False if Path(p) == path else real_access(p, mode)
            )
        return path


# ----------------------------------------------------------------------------- the rows


@dataclass(frozen=True)
class Case:
    id: str
    tool: str  # train, eval or analyze
    argv: Callable[[World], list[str]]  # the command line (it may set up the row's files)
    expect: str | Callable[[World], str]  # a fragment of the message: the input and the real cause


def T(*flags: str) -> list[str]:
    """clipfit-train argv over the tiny model, quick and quiet (later flags win over these)."""
    return ["--model", "clipfit-tiny", "--epochs", "1", "--warmup-epochs", "0", "--shots", "1", *flags, "-q"]


def on_shapes(w: World, *flags: str) -> list[str]:
    return [*T("--dataset", "shapes", "--pretrained", w.weights, "--out", str(w.out)), *flags]


def few_shot(w: World, dataset: str, *flags: str) -> list[str]:
    """Few-shot (all classes) training on ``dataset``, every few-shot image drawn (16 shots)."""
    return T(
        "--dataset", dataset, "--setting", "fewshot", "--shots", "16", "--pretrained", w.weights, "--out", str(w.out),
        "--max-eval-images", "64", *flags,
    )  # fmt: skip


def on_dtd(w: World, *flags: str, change: Callable[[], object] | None = None) -> list[str]:
    """Few-shot training on the DTD tree after ``change`` broke it."""
    w.dtd  # noqa: B018 - built before the row breaks it
    if change is not None:
        change()
    return few_shot(w, "dtd", "--data-root", str(w.data), *flags)


def on_split(w: World, change: Callable[[dict], None]) -> list[str]:
    """Few-shot training on the DTD tree whose split file ``change`` edited."""
    return on_dtd(w, change=lambda: w.edit_split(change))


def split_rows(extra: str = "") -> str:
    """A CSV with a split column: images 0-4 of each class train, 5-9 test; then ``extra`` rows."""
    rows = "".join(f"imgs/{c}/{i}.png,{c},{'train' if i < 5 else 'test'}\n" for c in CLASSES for i in range(10))
    return "path,label,split\n" + rows + extra


def on_csv(w: World, text: str | bytes, *flags: str) -> list[str]:
    w.csv  # noqa: B018
    w.csv.write_bytes(text) if isinstance(text, bytes) else w.csv.write_text(text)
    return few_shot(w, f"csv:{w.csv}", *flags)


def on_folder(w: World, change: Callable[[Path], object], *flags: str) -> list[str]:
    change(w.folder)
    return few_shot(w, f"folder:{w.folder}", *flags)


def on_run(w: World, name: str, change: Callable[[Path], object]) -> Path:
    """The copy of the finished run, after ``change`` broke its file ``name``."""
    change(w.run / name)
    return w.run


def resume(w: World, name: str, change: Callable[[Path], object]) -> list[str]:
    return ["--resume", str(on_run(w, name, change)), "-q"]


def eval_run(w: World, name: str, change: Callable[[Path], object], *flags: str) -> list[str]:
    on_run(w, name, change)
    return ev(w, *flags)


def analyze_run(w: World, name: str, change: Callable[[Path], object], command: str) -> list[str]:
    on_run(w, name, change)
    return an(w, command, str(w.run.parent if command == "results" else w.run))


def imagenet(w: World, classnames_txt: bytes | str) -> list[str]:
    build(w.data, "imagenet")
    w.file("imagenet/classnames.txt", classnames_txt)
    return few_shot(w, "imagenet", "--data-root", str(w.data))


def fewshot_file(w: World, content: str) -> list[str]:
    return on_dtd(w, change=lambda: w.file("dtd/split_fewshot/shot_16-seed_1.json", content))


def ev(w: World, *flags: str) -> list[str]:
    return ["--checkpoint", str(w.run), "--max-eval-images", "16", *flags, "-q"]


def an(w: World, command: str, *args: str) -> list[str]:
    return [command, *args, "--out", str(w.out / command), "-q"]


def _fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def _link_out(folder: Path) -> None:
    target = folder.parent.parent / "elsewhere.png"  # outside the dataset folder (and outside data/)
    image(target)
    (folder / "cat" / "0.png").unlink()
    (folder / "cat" / "0.png").symlink_to(target)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])


LONG_TEMPLATE = "a photo " * 40 + "of a {}."

CASES = [
    # --------------------------------------------------------------- clipfit-train: numbers
    Case(
        "lr nan",
        "train",
        lambda w: on_shapes(w, "--lr", "nan"),
        "learning rate (--lr) must be a finite number > 0, got nan",
    ),
    Case("lr inf", "train", lambda w: on_shapes(w, "--lr", "inf"), "(--lr) must be a finite number > 0, got inf"),
    Case(
        "lr not a number", "train", lambda w: on_shapes(w, "--lr", "fast"), "argument --lr: invalid float value: 'fast'"
    ),
    Case(
        "momentum 1.5", "train", lambda w: on_shapes(w, "--momentum", "1.5"), "(--momentum) must be in [0, 1), got 1.5"
    ),
    Case(
        "momentum nan", "train", lambda w: on_shapes(w, "--momentum", "nan"), "(--momentum) must be in [0, 1), got nan"
    ),
    Case(
        "weight decay -1",
        "train",
        lambda w: on_shapes(w, "--weight-decay", "-1"),
        "(--weight-decay) must be a finite number >= 0",
    ),
    Case(
        "warmup lr nan",
        "train",
        lambda w: on_shapes(w, "--warmup-lr", "nan"),
        "(--warmup-lr) must be a finite number >= 0",
    ),
    Case(
        "reg weight inf",
        "train",
        lambda w: on_shapes(w, "--reg-weight", "inf"),
        "regulariser weight must be a finite number >= 0, got inf",
    ),
    Case("epochs 0", "train", lambda w: on_shapes(w, "--epochs", "0"), "epochs must be at least 1, got 0"),
    Case(
        "epochs nan", "train", lambda w: on_shapes(w, "--epochs", "nan"), "argument --epochs: invalid int value: 'nan'"
    ),
    Case(
        "warmup epochs = epochs",
        "train",
        lambda w: on_shapes(w, "--warmup-epochs", "1"),
        "warm-up epochs must be in [0, epochs), got 1",
    ),
    Case(
        "shots 0",
        "train",
        lambda w: on_shapes(w, "--shots", "0"),
        "expected at least 1 image per class (or 'all'), got 0",
    ),
    Case("shots some", "train", lambda w: on_shapes(w, "--shots", "some"), "images per class or 'all', got 'some'"),
    Case("val every -1", "train", lambda w: on_shapes(w, "--val-every", "-1"), "validation every must be at least 0"),
    Case("batch size 0", "train", lambda w: on_shapes(w, "--batch-size", "0"), "batch size must be at least 1, got 0"),
    Case("seed -1", "train", lambda w: on_shapes(w, "--seed", "-1"), "seed must be in [0, 2^63), got -1"),
    Case("seed 2^70", "train", lambda w: on_shapes(w, "--seed", str(2**70)), f"seed must be in [0, 2^63), got {2**70}"),
    Case("log every 0", "train", lambda w: on_shapes(w, "--log-every", "0"), "log every must be at least 1, got 0"),
    Case(
        "checkpoint every -1",
        "train",
        lambda w: on_shapes(w, "--checkpoint-every", "-1"),
        "checkpoint every must be at least 1",
    ),
    Case(
        "eval batch size 0 (train)",
        "train",
        lambda w: on_shapes(w, "--eval-batch-size", "0"),
        "--eval-batch-size must be at least 1, got 0",
    ),
    # once reported as "no test images in label space 'base'"
    Case(
        "max eval images -1",
        "train",
        lambda w: on_shapes(w, "--max-eval-images", "-1"),
        "--max-eval-images must be at least 1, got -1",
    ),
    Case(
        "max eval images 0",
        "train",
        lambda w: on_shapes(w, "--max-eval-images", "0"),
        "--max-eval-images must be at least 1, got 0",
    ),
    Case(
        "num workers -1",
        "train",
        lambda w: on_shapes(w, "--num-workers", "-1"),
        "--num-workers must be at least 0, got -1",
    ),
    Case(
        "coop ctx 0",
        "train",
        lambda w: on_shapes(w, "--recipe", "coop", "--coop-ctx", "0"),
        "CoOp needs at least one context vector",
    ),
    Case(
        "coop ctx longer than the context",
        "train",
        lambda w: on_shapes(w, "--recipe", "coop", "--coop-ctx", "90"),
        "tokens long, but the model reads only 77",
    ),
    Case(
        "adapter ratio nan",
        "train",
        lambda w: on_shapes(w, "--recipe", "clip-adapter", "--adapter-ratio", "nan"),
        "ratio in [0, 1]; got 4, nan",
    ),
    Case(
        "adapter reduction wider than the features",
        "train",
        lambda w: on_shapes(w, "--recipe", "clip-adapter", "--adapter-reduction", "1000"),
        "--adapter-reduction 1000 leaves no bottleneck",
    ),
    # --------------------------------------------------------------- clipfit-train: names and paths
    Case("device gpu", "train", lambda w: on_shapes(w, "--device", "gpu"), "unknown device 'gpu'"),
    Case("model unknown", "train", lambda w: on_shapes(w, "--model", "ViT-Q-99"), "unknown architecture 'ViT-Q-99'"),
    Case(
        "pretrained missing file",
        "train",
        lambda w: on_shapes(w, "--pretrained", str(w.tmp / "gone.safetensors")),
        "pretrained weights file not found",
    ),
    Case(
        "pretrained is a folder",
        "train",
        lambda w: on_shapes(w, "--pretrained", str(w.tmp)),
        "is a folder; pass the weights file",
    ),
    Case("template stray brace", "train", lambda w: on_shapes(w, "--template", "a {} photo of {"), "has a stray brace"),
    Case(
        "template named field",
        "train",
        lambda w: on_shapes(w, "--template", "a photo of a {name}."),
        "has the field {name}",
    ),
    Case("template without a slot", "train", lambda w: on_shapes(w, "--template", "a photo"), "'a photo' has 0"),
    Case(
        "template longer than the context",
        "train",
        lambda w: on_shapes(w, "--template", LONG_TEMPLATE),
        "tokens long, but the model reads only 77: the tokenizer would cut off its end",
    ),
    Case(
        "out is a file", "train", lambda w: on_shapes(w, "--out", str(w.file("../notes.txt", "x"))), "is not a folder"
    ),
    Case(
        "out read-only", "train", lambda w: on_shapes(w, "--out", str(w.read_only(w.tmp / "ro"))), "cannot be written"
    ),
    Case(
        "run dir not UTF-8",
        "train",
        lambda w: on_shapes(w, "--run-dir", os.fsdecode(bytes(w.tmp) + b"/run-\xff")),
        "is not valid UTF-8",
    ),
    Case("dataset unknown", "train", lambda w: on_shapes(w, "--dataset", "shapez"), "unknown dataset 'shapez'"),
    Case("dataset folder missing", "train", lambda w: few_shot(w, f"folder:{w.tmp / 'nowhere'}"), "no such folder"),
    Case(
        "dataset folder is a file",
        "train",
        lambda w: few_shot(w, f"folder:{w.file('a.txt', 'x')}"),
        "is a file, not a folder",
    ),
    Case("dataset csv is a folder", "train", lambda w: few_shot(w, f"csv:{w.folder}"), "is a folder, not a CSV file"),
    Case(
        "data root missing",
        "train",
        lambda w: few_shot(w, "dtd", "--data-root", str(w.tmp / "nowhere")),
        "does not exist",
    ),
    Case(
        "classnames missing",
        "train",
        lambda w: few_shot(w, f"folder:{w.folder}", "--classnames", str(w.tmp / "n.txt")),
        "not found",
    ),
    Case(
        "classnames is a folder",
        "train",
        lambda w: few_shot(w, f"folder:{w.folder}", "--classnames", str(w.tmp)),
        "is a folder",
    ),
    Case(
        "classnames not UTF-8",
        "train",
        lambda w: few_shot(
            w, f"folder:{w.folder}", "--classnames", str(w.file("n.txt", "caf\xe9\nb\nc\nd\n".encode("latin-1")))
        ),
        "is not UTF-8 text (byte 0xe9 on line 1)",
    ),
    Case(
        "classnames empty",
        "train",
        lambda w: few_shot(w, f"folder:{w.folder}", "--classnames", str(w.file("n.txt", "\n"))),
        "lists no class names",
    ),
    Case(
        "classnames twice the same",
        "train",
        lambda w: few_shot(w, f"folder:{w.folder}", "--classnames", str(w.file("n.txt", "a\na\nb\nc\n"))),
        "'a' and 'a'",
    ),
    Case(
        "classnames for a benchmark",
        "train",
        lambda w: on_shapes(w, "--classnames", str(w.file("n.txt", "a\n"))),
        "--classnames applies to folder:/csv: datasets",
    ),
    Case("resume a folder without a run", "train", lambda w: ["--resume", str(w.tmp)], "no config.json there"),
    # --------------------------------------------------------------- CSV files
    Case(
        "csv not UTF-8",
        "train",
        lambda w: on_csv(w, ("path,label\n" + csv_rows()).replace("cat", "chat\xe9").encode("latin-1")),
        "is not UTF-8 text (byte 0xe9 on line 2)",
    ),
    Case(
        "csv empty path",
        "train",
        lambda w: on_csv(w, "path,label\n" + csv_rows() + ",cat\n"),
        "line 42: the path is empty",
    ),
    Case(
        "csv empty label",
        "train",
        lambda w: on_csv(w, "path,label\n" + csv_rows() + "imgs/cat/x.png,\n"),
        "line 42: the label is empty",
    ),
    # once read as a data row (then "class 'class' (label 1) has 1 images")
    Case(
        "csv header file,class is a header",
        "train",
        lambda w: on_csv(
            w, split_rows("imgs/cat/9.png,cat,training\n").replace("path,label,split", "file,class,subset")
        ),
        "line 42: split 'training' is not one of train, val, test",
    ),
    # once "has integer labels: give their names with --classnames"
    Case("csv header only", "train", lambda w: on_csv(w, "path,label\n"), "holds a header row but no images"),
    Case(
        "csv header without label",
        "train",
        lambda w: on_csv(w, "path,notes\n" + csv_rows()),
        "header without a label column",
    ),
    Case(
        "csv one column",
        "train",
        lambda w: on_csv(w, "".join(f"imgs/cat/{i}.png\n" for i in range(10))),
        "line 1: expected columns path,label[,split]",
    ),
    Case(
        "csv integer labels without names",
        "train",
        lambda w: on_csv(w, "p.png,0\nq.png,1\n"),
        "has integer labels: give their names",
    ),
    Case(
        "csv integer label out of range",
        "train",
        lambda w: on_csv(w, "imgs/cat/0.png,0\nimgs/dog/0.png,7\n", "--classnames", str(w.file("n.txt", "cat\ndog\n"))),
        "line 2: label 7 is outside 0..1",
    ),
    Case(
        "csv bad split",
        "train",
        lambda w: on_csv(w, "path,label,split\nimgs/cat/0.png,cat,training\n"),
        "line 2: split 'training' is not one of train, val, test",
    ),
    Case(
        "csv field over the limit",
        "train",
        lambda w: on_csv(w, "path,label\n" + "a" * 200_000 + ",cat\n"),
        "line 2: not a CSV row",
    ),
    Case(
        "csv image twice",
        "train",
        lambda w: on_csv(w, "path,label\n" + csv_rows() + "imgs/cat/0.png,dog\n"),
        "lines 2 and 42 both list 'imgs/cat/0.png'",
    ),
    Case(
        "csv names that clean alike",
        "train",
        lambda w: on_csv(w, "path,label\n" + csv_rows().replace(",dog", ",ca_t").replace(",cat", ",ca t")),
        "'ca t' and 'ca_t'",
    ),
    Case("csv one class", "train", lambda w: on_csv(w, "path,label\n" + csv_rows(classes=("cat",))), "has 1 class"),
    Case(
        "csv no training images",
        "train",
        lambda w: on_csv(w, "path,label,split\n" + csv_rows().replace("\n", ",test\n")),
        "has no training images",
    ),
    Case(
        "csv no test images",
        "train",
        lambda w: on_csv(w, "path,label,split\n" + csv_rows().replace("\n", ",train\n")),
        "has no test images",
    ),
    Case(
        "csv names a missing image",
        "train",
        lambda w: on_csv(w, split_rows("imgs/cat/99.png,cat,train\n")),
        "imgs/cat/99.png: not found",
    ),
    Case(
        "csv names a folder",
        "train",
        lambda w: on_csv(w, split_rows("imgs/cat,cat,train\n")),
        "imgs/cat: a folder, not an image file",
    ),
    # --------------------------------------------------------------- images of a folder dataset
    Case(
        "image zero bytes",
        "train",
        lambda w: on_folder(w, lambda f: (f / "cat" / "3.png").write_bytes(b"")),
        "cat/3.png: not an image PIL can read",
    ),
    Case("image truncated", "train", lambda w: on_folder(w, lambda f: _truncate(f / "dog" / "5.png")), "dog/5.png: "),
    Case(
        "image is text",
        "train",
        lambda w: on_folder(w, lambda f: (f / "bird" / "1.png").write_text("hello")),
        "bird/1.png: not an image PIL can read",
    ),
    Case(
        "image decompression bomb",
        "train",
        lambda w: on_folder(w, lambda f: bomb_png(f / "fish" / "2.png")),
        "fish/2.png: its declared size is too large to decode safely",
    ),
    Case(
        "every bad image listed at once",
        "train",
        lambda w: on_folder(w, lambda f: [(f / c / f"{i}.png").write_bytes(b"") for c in CLASSES for i in range(4)]),
        "16 images cannot be read",
    ),
    # a folder dataset is the files inside its folder: a link out is refused, not followed (docs/reliability.md)
    Case("image symlink out of the folder", "train", lambda w: on_folder(w, _link_out), "cat/0.png: a link to"),
    Case(
        "folder one class",
        "train",
        lambda w: on_folder(w, lambda f: [shutil.rmtree(f / c) for c in CLASSES[1:]]),
        "has 1 class",
    ),
    Case(
        "folder classes that clean alike",
        "train",
        lambda w: on_folder(w, lambda f: (f / "bird").rename(f / "dog_")),
        "'dog' and 'dog_'",
    ),
    Case(
        "folder base-to-new with two classes",
        "train",
        lambda w: [*on_folder(w, lambda f: [shutil.rmtree(f / c) for c in CLASSES[2:]]), "--setting", "base2new"],
        "the label space 'base' has 1 class(es)",
    ),
    # --------------------------------------------------------------- benchmark split files (DTD)
    Case(
        "split not JSON", "train", lambda w: on_dtd(w, change=lambda: w.split_file.write_text("{")), "is not valid JSON"
    ),
    Case(
        "split not UTF-8",
        "train",
        lambda w: on_dtd(w, change=lambda: w.split_file.write_bytes(b"\xff\xfe{")),
        "is not UTF-8 text",
    ),
    Case(
        "split nested too deeply",
        "train",
        lambda w: on_dtd(w, change=lambda: w.split_file.write_text("[" * 100_000)),
        "nested too deeply",
    ),
    Case(
        "split is a folder",
        "train",
        lambda w: on_dtd(w, change=lambda: (w.split_file.unlink(), w.split_file.mkdir())),
        "is a folder, not a file",
    ),
    Case(
        "split train not a list",
        "train",
        lambda w: on_split(w, lambda s: s.update(train=5)),
        "'train' is 5, not a list of entries",
    ),
    Case(
        "split entry path null",
        "train",
        lambda w: on_split(w, lambda s: s["train"].append([None, 0, "banded"])),
        "the path is None, not a string",
    ),
    Case(
        "split entry goes up",
        "train",
        lambda w: on_split(w, lambda s: s["test"].insert(0, ["../../../../etc/passwd", 0, "banded"])),
        "the path goes up with '..'",
    ),
    Case(
        "split entry absolute",
        "train",
        lambda w: on_split(w, lambda s: s["train"].append(["/etc/passwd", 0, "banded"])),
        "the path is absolute",
    ),
    # once a list of 10^12 items: the process was killed for memory
    Case(
        "split label 10^12",
        "train",
        lambda w: on_split(w, lambda s: s["train"][0].__setitem__(1, 10**12)),
        "the largest is 1000000000000",
    ),
    Case(
        "split label negative",
        "train",
        lambda w: on_split(w, lambda s: s["train"][0].__setitem__(1, -1)),
        "label -1 is negative",
    ),
    Case(
        "split one class",
        "train",
        lambda w: on_split(w, lambda s: s.update({k: [e for e in v if e[1] == 0] for k, v in s.items()})),
        "has 1 class",
    ),
    Case(
        "split names a missing image",
        "train",
        lambda w: on_split(w, lambda s: s["test"].append(["banded/gone.jpg", 0, "banded"])),
        "banded/gone.jpg: not found",
    ),
    # opening a FIFO would block: it is refused before it is opened
    Case(
        "split names a FIFO",
        "train",
        lambda w: on_dtd(w, change=lambda: _fifo(w.dtd / "images/banded/banded_test01.jpg")),
        "banded/banded_test01.jpg: not a regular file",
    ),
    # --------------------------------------------------------------- few-shot files
    Case("few-shot file not JSON", "train", lambda w: fewshot_file(w, "{"), "shot_16-seed_1.json is not valid JSON"),
    Case(
        "few-shot file foreign entry",
        "train",
        lambda w: fewshot_file(w, '{"train": [["../x.jpg", 0, "banded"]], "val": []}'),
        "does not match the current split",
    ),
    Case(
        "few-shot file empty",
        "train",
        lambda w: fewshot_file(w, '{"train": [], "val": []}'),
        "lists no training images",
    ),
    Case(
        "few-shot file is a folder",
        "train",
        lambda w: on_dtd(w, change=lambda: (w.dtd / "split_fewshot" / "shot_16-seed_1.json").mkdir(parents=True)),
        "shot_16-seed_1.json is a folder",
    ),
    # --------------------------------------------------------------- ImageNet's classnames.txt
    Case(
        "classnames.txt not UTF-8",
        "train",
        lambda w: imagenet(w, b"n01440764 tench caf\xe9\n"),
        "classnames.txt is not UTF-8 text",
    ),
    Case(
        "classnames.txt line without a name",
        "train",
        lambda w: imagenet(w, "n01440764\n"),
        "line 1: expected '<wnid> <class name>'",
    ),
    # --------------------------------------------------------------- a run's files
    Case(
        "config.json not JSON (resume)",
        "train",
        lambda w: resume(w, "config.json", lambda p: p.write_text("{")),
        "config.json: Expecting",
    ),
    Case(
        "config.json not UTF-8 (eval)",
        "eval",
        lambda w: eval_run(w, "config.json", lambda p: p.write_bytes(b"\xff")),
        "config.json: 'utf-8' codec can't decode",
    ),
    Case(
        "config.json a list (param-change)",
        "analyze",
        lambda w: analyze_run(w, "config.json", lambda p: p.write_text("[]"), "param-change"),
        "config.json is not a JSON object",
    ),
    Case(
        "config.json lr a string (resume)",
        "train",
        lambda w: resume(w, "config.json", lambda p: w.edit_json(p, lambda r: r["config"]["optim"].update(lr="x"))),
        "optim.lr: expected a number or null, got 'x'",
    ),
    Case(
        "config.json data null (tsne)",
        "analyze",
        lambda w: analyze_run(
            w, "config.json", lambda p: w.edit_json(p, lambda r: r["config"].update(data=None)), "tsne"
        ),
        "data: expected a JSON object, got None",
    ),
    Case(
        "results.json not JSON (resume)",
        "train",
        lambda w: resume(w, "results.json", lambda p: p.write_text("{")),
        "results.json: Expecting",
    ),
    Case(
        "results.json metrics a string (results)",
        "analyze",
        lambda w: analyze_run(w, "results.json", lambda p: w.edit_json(p, lambda r: r.update(metrics="x")), "results"),
        "none of the results.json files",
    ),
    Case(
        "checkpoint random bytes (eval)",
        "eval",
        lambda w: eval_run(w, "checkpoint.safetensors", lambda p: p.write_bytes(os.urandom(256))),
        "is not a clipfit checkpoint",
    ),
    Case(
        "checkpoint empty (param-change)",
        "analyze",
        lambda w: analyze_run(w, "checkpoint.safetensors", lambda p: p.write_bytes(b""), "param-change"),
        "is not a clipfit checkpoint",
    ),
    Case(
        "checkpoint missing (eval)",
        "eval",
        lambda w: eval_run(w, "checkpoint.safetensors", Path.unlink),
        "no clipfit checkpoint",
    ),
    # --------------------------------------------------------------- clipfit-eval flags
    Case(
        "eval max images 0",
        "eval",
        lambda w: ev(w, "--max-eval-images", "0"),
        "--max-eval-images must be at least 1, got 0",
    ),
    Case(
        "eval batch size 0",
        "eval",
        lambda w: ev(w, "--eval-batch-size", "0"),
        "--eval-batch-size must be at least 1, got 0",
    ),
    Case(
        "eval out is a file",
        "eval",
        lambda w: ev(w, "--datasets", "shapes-pretrain", "--out", str(w.file("../f", "x"))),
        "is not a folder",
    ),
    Case(
        "eval out read-only",
        "eval",
        lambda w: ev(w, "--datasets", "shapes-pretrain", "--out", str(w.read_only(w.tmp / "ro"))),
        "cannot be written",
    ),
    Case("eval dataset unknown", "eval", lambda w: ev(w, "--datasets", "nope"), "unknown dataset 'nope'"),
    Case(
        "eval pretrained is a folder",
        "eval",
        lambda w: ev(w, "--pretrained", str(w.tmp)),
        "is a folder; pass the weights file",
    ),
    Case(
        "eval target with bad images",
        "eval",
        lambda w: (
            on_folder(w, lambda f: [(f / "cat" / f"{i}.png").write_bytes(b"x") for i in range(10)]),
            ev(w, "--datasets", f"folder:{w.folder}"),
        )[1],
        "images cannot be read (3 of 12 test)",
    ),
    Case(
        "eval checkpoint random file",
        "eval",
        lambda w: ["--checkpoint", str(w.file("x.safetensors", os.urandom(64)))],
        "is not a clipfit checkpoint",
    ),
    # --------------------------------------------------------------- clipfit-analyze flags
    Case(
        "tsne max images 0",
        "analyze",
        lambda w: an(w, "tsne", str(w.run), "--max-images", "0"),
        "argument --max-images: must be an integer >= 1, got '0'",
    ),
    Case(
        "tsne perplexity nan",
        "analyze",
        lambda w: an(w, "tsne", str(w.run), "--perplexity", "nan"),
        "argument --perplexity: must be a finite number > 0",
    ),
    Case("tsne knn 0", "analyze", lambda w: an(w, "tsne", str(w.run), "--knn", "0"), "argument --knn"),
    Case(
        "tsne max classes 0",
        "analyze",
        lambda w: an(w, "tsne", str(w.run), "--max-classes", "0"),
        "argument --max-classes",
    ),
    Case(
        "tsne batch size x",
        "analyze",
        lambda w: an(w, "tsne", str(w.run), "--batch-size", "x"),
        "argument --batch-size: expected an integer, got 'x'",
    ),
    Case("tsne seed -1", "analyze", lambda w: an(w, "tsne", str(w.run), "--tsne-seed", "-1"), "argument --tsne-seed"),
    Case(
        "tsne template stray brace",
        "analyze",
        lambda w: an(w, "tsne", str(w.run), "--template", "{"),
        "has a stray brace",
    ),
    Case(
        "rep-change max images 0",
        "analyze",
        lambda w: an(w, "rep-change", str(w.run), "--max-images", "0"),
        "argument --max-images",
    ),
    Case(
        "grad-sums batches 0",
        "analyze",
        lambda w: an(w, "grad-sums", str(w.run), "--batches", "0"),
        "argument --batches",
    ),
    Case(
        "grad-sums reg weight nan",
        "analyze",
        lambda w: an(w, "grad-sums", str(w.run), "--reg-weight", "nan"),
        "argument --reg-weight",
    ),
    Case("grad-sums top 0", "analyze", lambda w: an(w, "grad-sums", str(w.run), "--top", "0"), "argument --top"),
    Case(
        "grad-sums layers missing",
        "analyze",
        lambda w: an(w, "grad-sums", str(w.run), "--layers", str(w.tmp / "x")),
        "no layers.jsonl at",
    ),
    Case(
        "grad-sums layers not UTF-8",
        "analyze",
        lambda w: an(w, "grad-sums", str(w.run), "--layers", str(w.file("layers.jsonl", b"\xff\x00{"))),
        "is not a readable JSON-lines text file",
    ),
    Case(
        "param-change pretrained malformed",
        "analyze",
        lambda w: an(w, "param-change", str(w.run), "--pretrained", "openai"),
        "expected MODEL:SOURCE such as ViT-B-16:openai, got 'openai'",
    ),
    Case(
        "param-change out is a file",
        "analyze",
        lambda w: ["param-change", str(w.run), "--out", str(w.file("../f", "x")), "-q"],
        "--out",
    ),
    Case(
        "report max images 0",
        "analyze",
        lambda w: an(w, "report", str(w.run), "--max-images", "0"),
        "argument --max-images",
    ),
    Case(
        "results readme not UTF-8",
        "analyze",
        lambda w: an(w, "results", str(w.run), "--readme", str(w.file("README.md", b"\xff\xfe"))),
        "cannot read --readme",
    ),
    Case("results folder missing", "analyze", lambda w: an(w, "results", str(w.tmp / "nowhere")), "no such run tree"),
]


# ----------------------------------------------------------------------------- the test


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (links not followed): kind, and for files size and modification time.

    ``split_fewshot/`` is left out, and so are folder times (adding it changes its parent's).
    """
    if not root.exists():
        return {}
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if "split_fewshot" in rel.parts:
            continue
        info = path.lstat()
        kind = stat.S_IFMT(info.st_mode)
        out[str(rel)] = (kind,) if kind == stat.S_IFDIR else (kind, info.st_size, info.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, train_tiny) -> Path:
    """A finished tiny ClipFit run on the shapes world (rows copy it before breaking it)."""
    run_dir, _ = train_tiny(tmp_path_factory.mktemp("bad-input") / "run", shots=1, epochs=1, warmup_epochs=0)
    return run_dir


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_error(case: Case, tmp_path, finished_run, shared_tiny_weights, monkeypatch, capsys):
    world = World(tmp_path, shared_tiny_weights, finished_run, monkeypatch)
    argv = case.argv(world)
    world.data.mkdir(parents=True, exist_ok=True)
    before = _snapshot(world.data)
    try:
        status = TOOLS[case.tool](argv)
    except SystemExit as exc:  # argparse
        status = exc.code
    captured = capsys.readouterr()
    err = captured.err.strip()
    expect = case.expect(world) if callable(case.expect) else case.expect
    assert status == 2, f"exit status {status}; stderr:\n{err}"
    assert "Traceback" not in err and "Traceback" not in captured.out
    assert expect in err, f"expected {expect!r} in:\n{err}"
    lines = err.splitlines()
    assert len(lines) <= MAX_LINES and all(line.strip() for line in lines), f"not one paragraph:\n{err}"
    assert _snapshot(world.data) == before, "the user's data folder changed"


# ----------------------------------------------------------------------------- end to end (slow: they train)


@pytest.mark.slow
def test_skip_bad_images_leaves_them_out_and_marks_the_run(tmp_path, shared_tiny_weights, capsys):
    data = folder_dataset(tmp_path / "data" / "photos")
    for i in range(3):
        (data / "cat" / f"{i}.png").write_bytes(b"")
    (data / "dog" / "4.png").write_text("not an image")
    run_dir = tmp_path / "run"
    argv = T(
        "--dataset", f"folder:{data}", "--setting", "fewshot", "--shots", "16", "--pretrained", shared_tiny_weights
    )
    assert train.main([*argv, "--run-dir", str(run_dir)]) == 2
    assert "4 images cannot be read" in capsys.readouterr().err and not run_dir.exists()  # stopped before any work
    assert train.main([*argv, "--run-dir", str(run_dir), "--skip-bad-images"]) == 0
    assert "leaving out 4 images that cannot be read" in capsys.readouterr().err
    results = json.loads((run_dir / "results.json").read_text())
    assert results["comparable"] is False
    assert sorted(b["path"] for b in results["bad_images"]) == ["cat/0.png", "cat/1.png", "cat/2.png", "dog/4.png"]
    assert all(b["reason"].startswith("not an image PIL can read") for b in results["bad_images"])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["data"]["skip_bad_images"] is True  # a result-relevant setting: resumes keep it


@pytest.mark.slow
def test_an_image_broken_past_its_header_is_one_line_from_a_worker(tmp_path, shared_tiny_weights, capsys):
    """A JPEG cut short passes the header check; the DataLoader worker that decodes it reports one line."""
    data = folder_dataset(tmp_path / "data" / "photos")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    for i in range(10):  # every cat image, so some are in the test split
        path = data / "cat" / f"{i}.png"
        Image.fromarray(noise).save(path, format="JPEG")  # a JPEG under a .png name: PIL reads by content
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    argv = T("--dataset", f"folder:{data}", "--setting", "fewshot", "--pretrained", shared_tiny_weights)
    assert train.main([*argv, "--num-workers", "1", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ERROR: cannot read image") and "cat/" in err and "truncated" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "DataLoader worker" not in err


@pytest.mark.slow
def test_a_diverging_run_stops_at_the_first_non_finite_step(tmp_path, capsys):
    """--lr 1e6 on the shapes world: the gradients are infinite at step 4; no run at chance is recorded."""
    run_dir = tmp_path / "run"
    argv = ["--dataset", "shapes", "--shots", "2", "--epochs", "3", "--max-eval-images", "32", "--lr", "1e6"]
    assert train.main([*argv, "--run-dir", str(run_dir), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ERROR: training diverged at step 4 (epoch 2, learning rate 1e+06)"), err
    assert "lower --lr" in err and len(err.splitlines()) == 1
    assert not (run_dir / "results.json").exists()
