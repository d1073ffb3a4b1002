"""The model card (README.md) of an export folder: what the model is, how well it did, how to load it.

Hugging Face reads the YAML front matter (library, tags, the base model when it lives on the Hub);
people read the rest: the run's signature, its results against zero-shot, how to load the model
with clipfit and, where the recipe allows, with open_clip alone, the files, and how it was trained.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import open_clip

from clipfit.console import results_table
from clipfit.recipes import RECIPES

_SETTINGS = ("dataset", "setting", "shots", "seed", "epochs", "lr", "reg_weight", "precision", "template")


def base_model_repo(model: str, pretrained: str | None) -> str | None:
    """The Hub repository of the pretrained weights (``timm/vit_base_patch16_clip_224.openai``), when known."""
    if not pretrained:
        return None
    if pretrained.startswith("hf-hub:"):
        return pretrained[len("hf-hub:") :].strip("/")
    hub = (open_clip.get_pretrained_cfg(model, pretrained) or {}).get("hf_hub") or ""
    parts = [p for p in hub.split("/") if p]
    return "/".join(parts[:2]) if len(parts) >= 2 else None


def size_text(size: int) -> str:
    """Bytes as ``31.9 MB`` or ``32.2 kB``."""
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


def command_line(argv: Sequence[str]) -> str:
    """A recorded ``sys.argv`` as the command to type: console scripts by name, ``-m`` modules as such."""
    first = Path(argv[0])
    if first.suffix == ".py" and "clipfit" in first.parts:  # python -m clipfit.demo, python -m clipfit.cli.train
        start = len(first.parts) - 1 - first.parts[::-1].index("clipfit")
        program = ["python", "-m", ".".join(first.with_suffix("").parts[start:])]
    else:
        program = [first.name]
    return shlex.join([*program, *argv[1:]])


def _front_matter(meta: Mapping[str, Any]) -> str:
    lines = ["---", "library_name: open_clip", "pipeline_tag: zero-shot-image-classification", "tags:"]
    tags = dict.fromkeys(("clip", "open_clip", "clipfit", str(meta.get("recipe") or "clipfit")))  # in order, once
    lines += [f"- {tag}" for tag in tags]
    base = base_model_repo(str(meta.get("model")), meta.get("pretrained"))
    if base:
        lines.append(f"base_model: {base}")
    return "\n".join([*lines, "---", ""])


def _results(record: Mapping[str, Any]) -> list[str]:
    if not record.get("metrics") or not record.get("zero_shot"):
        return ["No results were recorded (the run had not finished its evaluation).", ""]
    what = f"{record.get('dataset')}, {record.get('setting')}, {record.get('shots')} shots, seed {record.get('seed')}"
    note = (
        ""
        if record.get("comparable", True)
        else " Not comparable with published numbers (a random split or a capped test set)."
    )
    return [f"Accuracy (%) on the test set of {what}, against zero-shot CLIP on the same images.{note}", "",
            "```", results_table({"recipe": record.get("recipe", "fine-tuned"), **record}), "```", ""]  # fmt: skip


def model_card(
    meta: Mapping[str, Any],
    record: Mapping[str, Any],
    files: Mapping[str, int],
    open_clip_lines: Sequence[str],
    why_no_merged: str | None,
    load_ref: str,
) -> str:
    """The README.md of an export.

    Args:
        meta: the delta's checkpoint metadata (model, pretrained, activation, recipe, head, class names, ...).
        record: results.json of the run (or the checkpoint metadata), with its ``command`` when known.
        files: the export's files and their sizes in bytes.
        open_clip_lines: the open_clip calls that load the merged file (none without one).
        why_no_merged: why there is no merged open_clip file, if there is none.
        load_ref: what ``clipfit.load`` takes for this export (the folder, or ``hf-hub:USER/REPO``).
    """
    recipe = str(meta.get("recipe") or "clipfit")
    described = RECIPES[recipe].description if recipe in RECIPES else recipe
    classnames = list(meta.get("classnames") or [])
    example = [c for c in classnames[:2]] or ["a class", "another class"]
    out = [
        _front_matter(meta),
        f"# {meta.get('model')} fine-tuned with clipfit ({recipe}) on {meta.get('dataset')}",
        "",
    ]
    out += [f"`{meta.get('signature')}`", ""]
    out += [
        f"Fine-tuned from {meta.get('model')} / {meta.get('pretrained')} ({meta.get('activation')} activation) "
        f"with clipfit's recipe `{recipe}`: {described}.",
        "",
        "## Results",
        "",
        *_results(record),
        "## Use",
        "",
        "```python",
        "import clipfit",
        "",
        f'model = clipfit.load("{load_ref}")  # add device="cuda" for a GPU',
        'predictions = model.predict(["photo.jpg"])  # the classes it was trained on',
        f'predictions = model.predict(["photo.jpg"], classnames={[*example, "any new class"]!r})',
        "print(predictions[0].labels, predictions[0].probs)",
        "```",
        "",
    ]
    if open_clip_lines:
        out += [
            "With open_clip alone (the merged weights; no clipfit needed):",
            "",
            "```python",
            "import open_clip",
            "",
        ]
        out += [f"model = {line}" for line in open_clip_lines]
        out += ["```", ""]
    if why_no_merged:
        out += [f"No merged open_clip file: {why_no_merged}.", ""]
    out += ["## Files", "", "| file | size |", "|---|---|"]
    out += [f"| `{name}` | {size_text(size)} |" for name, size in files.items()]
    out += ["", "## Training", ""]
    command = record.get("command")
    if command:
        out += ["```", command_line(command), "```", ""]
    out += [f"- {key}: `{record[key]}`" for key in _SETTINGS if record.get(key) is not None]
    head = meta.get("head") or {}
    if head.get("kind", "clip") != "clip":
        out.append(f"- head: `{dict(head)}`")
    out.append(
        f"- class names ({len(classnames)}): {', '.join(classnames[:20])}{' ...' if len(classnames) > 20 else ''}"
    )
    versions = meta.get("versions") or {}
    if versions:
        out.append(f"- versions: {', '.join(f'{k} {v}' for k, v in versions.items())}")
    return "\n".join(out) + "\n"
