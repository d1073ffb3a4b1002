"""The Python API: a trained model back in one call, to classify, embed, export and share.

::

    import clipfit

    model = clipfit.load("runs/shapes/base2new/clipfit/shots16/seed1")   # or an export folder, or hf-hub:USER/REPO
    for p in model.predict(["a.png", "b.png"], classnames=["red heart", "blue star"], top_k=2):
        print(p.source, p.labels, p.probs)
    model.export("exports/shapes-clipfit")
    model.push_to_hub("me/shapes-clipfit")

:func:`load` takes a run directory, its checkpoint file, an export folder (:mod:`clipfit.export`) or
``hf-hub:USER/REPO`` (:mod:`clipfit.hub`), and returns a :class:`FineTuned`: the open_clip model with
the recipe's head and trained tensors in place, in eval mode, with its preprocessing, tokenizer,
class names and template. Every feature goes through the recipe's head, as in ``clipfit-eval``, so
class names the run never saw are scored with the fine-tuned text tower (base-to-new's point);
only a linear probe, which has no text side, is tied to the classes it was fit on.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from tqdm import tqdm

from clipfit import hub
from clipfit.checkpoint import Checkpoint
from clipfit.data.base import DataError, FileReader
from clipfit.data.transforms import test_transform
from clipfit.errors import ClipfitError
from clipfit.export import Exported, ExportError, check_base, is_export, read_export, write_export
from clipfit.heads import ClipHead, ProbeHead
from clipfit.models import ModelBundle, ModelLoadError, build_model
from clipfit.objective import class_logits
from clipfit.rundir import CHECKPOINT_FILE, load_run
from clipfit.towers import image_input_dtype
from clipfit.trained import build_trained_model

logger = logging.getLogger(__name__)

ImageInput = str | Path | Image.Image
_READ = FileReader(
    Path(), any_path=True
)  # absolute paths stay absolute, relative ones are relative to the working directory
_PER_IMAGE_SEQUENCES = 8192  # prompts per text pass of a per-image head (CoCoOp): images x classes


class LoadError(ClipfitError, RuntimeError):
    """What :func:`load` was given is not a run, a checkpoint, an export or a Hub repository it can read."""


@dataclass
class Prediction:
    """The top-k classes of one image."""

    source: str  # the image's path, or "image <i>" for an image passed in memory
    labels: list[str]  # the top-k class names, most probable first (empty when the image could not be read)
    probs: list[float]  # their probabilities (softmax over all the class names scored)
    error: str | None = None  # why the image could not be read (predict(..., on_error="skip"))

    @property
    def label(self) -> str | None:
        """The most probable class name (None for an unreadable image)."""
        return self.labels[0] if self.labels else None


def _rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


class FineTuned:
    """A trained model ready to use: an open_clip model with its recipe's head, preprocessing and label space.

    Attributes:
        model: the open_clip model (head modules attached, trained tensors in place), in eval mode.
        preprocess: PIL image -> tensor, the evaluation transform (resize, center crop, normalise).
        tokenizer: open_clip's tokenizer of the architecture.
        classnames: the class names the run trained on (what :meth:`predict` scores by default).
        template: the prompt template of the run (set it to score with another one).
        head: the recipe's head (:mod:`clipfit.heads`): how images and class names become features.
        record: what the run recorded (results.json, or the checkpoint's metadata), with its command.
        checkpoint: the trained tensors and their metadata (what :meth:`export` writes as the delta).
        source: where the model was loaded from.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        checkpoint: Checkpoint | None,
        record: dict[str, Any],
        device: torch.device,
        source: str,
    ) -> None:
        meta = checkpoint.meta if checkpoint is not None else record
        self.bundle = bundle
        self.model = bundle.model
        self.tokenizer = bundle.tokenizer
        self.head: ClipHead = bundle.head or ClipHead()
        self.preprocess: Callable[[Image.Image], torch.Tensor] = T.Compose(
            [_rgb, *test_transform(bundle.preprocess).transforms]
        )
        self.classnames: list[str] = list(meta.get("classnames") or [])
        self.template: str = meta.get("template") or "a photo of a {}."
        self.checkpoint = checkpoint
        self.record = record
        self.device = device
        self.source = source

    def __repr__(self) -> str:
        return (
            f"FineTuned({self.bundle.name} / {self.bundle.pretrained}, recipe {self.recipe}, "
            f"{len(self.classnames)} classes, from {self.source!r})"
        )

    @property
    def recipe(self) -> str:
        return str((self.checkpoint.meta if self.checkpoint else self.record).get("recipe") or "clipfit")

    # ------------------------------------------------------------------ features

    def _pixels(self, images: Sequence[ImageInput]) -> torch.Tensor:
        batch = [self.preprocess(image if isinstance(image, Image.Image) else _READ(str(image))) for image in images]
        return torch.stack(batch).to(self.device, image_input_dtype(self.model))

    @torch.no_grad()
    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head.encode_images(self.model, pixels).float(), dim=-1)

    @torch.no_grad()
    def embed_images(self, images: Sequence[ImageInput] | torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """L2-normalised image features (N, D) through the recipe's head, as classification uses them.

        Args:
            images: paths, PIL images, or a batch already preprocessed with :attr:`preprocess` (N, 3, H, W).
            batch_size: images per forward pass.
        """
        if isinstance(images, torch.Tensor):
            pixels = images.to(self.device, image_input_dtype(self.model))
            return torch.cat(
                [self._image_features(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
            )
        images = list(images)
        parts = [
            self._image_features(self._pixels(images[i : i + batch_size])) for i in range(0, len(images), batch_size)
        ]
        return torch.cat(parts) if parts else torch.zeros(0, 0)

    def _label_space(self, classnames: Sequence[str] | None) -> list[str]:
        if isinstance(classnames, str):
            raise ClipfitError("classnames must be a list of class names, not one string")
        names = list(self.classnames if classnames is None else classnames)
        blank = [i for i, n in enumerate(names) if not str(n).strip()]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if not names or blank or duplicates:
            problem = "no class names" if not names else f"blank names at {blank}" if blank else f"{duplicates} twice"
            raise ClipfitError(f"the class names to score must be distinct and non-empty; got {problem}")
        if isinstance(self.head, ProbeHead) and names != self.classnames:
            raise ClipfitError(
                f"this model is a linear probe: it scores only the {len(self.classnames)} classes it was fit on "
                f"({', '.join(self.classnames[:5])}{', ...' if len(self.classnames) > 5 else ''}) and has no text "
                "side for other class names; fine-tune a recipe such as clipfit to classify new classes"
            )
        return names

    @torch.no_grad()
    def embed_texts(self, classnames: Sequence[str], template: str | None = None) -> torch.Tensor:
        """L2-normalised class text features (C, D) through the recipe's head: what images are compared with.

        ``template`` defaults to the run's (ignored by prompt-learning heads, whose learnt context replaces
        it). For a head whose class features depend on the image (CoCoOp) these are the features of the
        learnt context alone; :meth:`predict` adds each image's shift.
        """
        if isinstance(self.head, ProbeHead):
            raise ClipfitError("a linear probe has no text side: it has no text features to embed")
        names = list(classnames)
        inputs = self.head.class_inputs(self.tokenizer, self.model, template or self.template, names).to(self.device)
        return F.normalize(self.head.encode_classes(self.model, inputs).float(), dim=-1)

    def _classifier(self, names: list[str]) -> Callable[[torch.Tensor], torch.Tensor]:
        """normalised image features (B, D) -> logits (B, C) over ``names``, through the head."""
        model, head = self.model, self.head
        if isinstance(head, ProbeHead):
            return lambda f: f @ model.probe.weight.float().T + model.probe.bias.float()
        if not head.per_image:
            text = self.embed_texts(names)
            return lambda f: class_logits(f, text, model.logit_scale)
        inputs = head.class_inputs(self.tokenizer, model, self.template, names).to(self.device)
        chunk = max(1, _PER_IMAGE_SEQUENCES // len(names))

        def per_image(features: torch.Tensor) -> torch.Tensor:
            parts = []
            for start in range(0, len(features), chunk):
                part = features[start : start + chunk]
                text = F.normalize(head.encode_classes_per_image(model, inputs, part).float(), dim=-1)
                parts.append(class_logits(part, text, model.logit_scale))
            return torch.cat(parts)

        return per_image

    @torch.no_grad()
    def logits(
        self, images: Sequence[ImageInput] | torch.Tensor, classnames: Sequence[str] | None = None, batch_size: int = 64
    ) -> torch.Tensor:
        """Logits (N, C) of the images over the class names (the run's by default), through the recipe's head."""
        classify = self._classifier(self._label_space(classnames))
        return classify(self.embed_images(images, batch_size))

    # ------------------------------------------------------------------ predict

    @torch.no_grad()
    def predict(
        self,
        images: Sequence[ImageInput],
        classnames: Sequence[str] | None = None,
        top_k: int = 5,
        batch_size: int = 64,
        on_error: str = "raise",
        progress: bool = False,
    ) -> list[Prediction]:
        """The ``top_k`` most probable class names of every image, with their probabilities.

        Args:
            images: image paths or PIL images.
            classnames: the classes to choose from; new names are welcome (the run's names by default).
            top_k: classes per image (at most the number of class names).
            batch_size: images per forward pass.
            on_error: ``"raise"``: an unreadable image raises DataError naming it; ``"skip"``: its
                Prediction has no labels and says why in ``error``, and the other images are classified.
            progress: show a progress bar (on a terminal).

        Raises:
            ClipfitError: empty, blank or duplicate class names, new class names for a linear probe, a
                ``top_k`` below 1, or (with ``on_error="raise"``) an unreadable image.
        """
        if top_k < 1:
            raise ClipfitError(f"top_k must be at least 1, got {top_k}")
        if on_error not in ("raise", "skip"):
            raise ClipfitError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        names = self._label_space(classnames)
        classify, k = self._classifier(names), min(top_k, len(names))
        images = list(images)
        sources = [str(im) if not isinstance(im, Image.Image) else f"image {i}" for i, im in enumerate(images)]
        out: list[Prediction | None] = [None] * len(images)
        with tqdm(total=len(images), desc="predict", unit="img", disable=None if progress else True) as bar:
            for start in range(0, len(images), batch_size):
                pixels, kept = [], []
                for i in range(start, min(start + batch_size, len(images))):
                    try:
                        image = images[i] if isinstance(images[i], Image.Image) else _READ(str(images[i]))
                        pixels.append(self.preprocess(image))
                        kept.append(i)
                    except DataError as exc:
                        if on_error == "raise":
                            raise
                        out[i] = Prediction(sources[i], [], [], str(exc))
                if pixels:
                    batch = torch.stack(pixels).to(self.device, image_input_dtype(self.model))
                    probs = classify(self._image_features(batch)).softmax(dim=-1)
                    top = probs.topk(k, dim=-1)
                    for row, i in enumerate(kept):
                        labels = [names[j] for j in top.indices[row].tolist()]
                        out[i] = Prediction(sources[i], labels, [round(p, 6) for p in top.values[row].tolist()])
                bar.update(min(batch_size, len(images) - start))
        return [p for p in out if p is not None]

    # ------------------------------------------------------------------ export and share

    def export(self, path: str | Path, merged: bool | None = None, repo: str | None = None) -> Exported:
        """Write the export folder (:mod:`clipfit.export`): the merged open_clip model where the recipe allows it,
        the delta and a model card.

        Args:
            path: the folder.
            merged: True: require the merged open_clip file (refused for a recipe with a head); False: the delta
                only; None: the merged file whenever the recipe allows it.
            repo: the Hub repository it is meant for (``USER/REPO``), named in the model card.
        """
        if self.checkpoint is None:
            raise ExportError(f"{self.source} came without its trained tensors (no delta): nothing to export from")
        return write_export(path, self.model, self.checkpoint, self.record, merged, repo)

    def push_to_hub(
        self,
        repo: str,
        merged: bool | None = None,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str | None = None,
    ) -> str:
        """Export into a temporary folder and upload it to the Hugging Face Hub repository ``USER/REPO``
        (created if needed); returns its URL. ``merged=False`` pushes the delta alone (kilobytes)."""
        repo = hub.repo_id(repo)
        with tempfile.TemporaryDirectory(prefix="clipfit-export-") as folder:
            self.export(folder, merged=merged, repo=repo)
            return hub.push_folder(folder, repo, private=private, token=token, commit_message=commit_message)


def _device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _from_run(path: Path, device: torch.device, model: str | None, pretrained: str | None) -> FineTuned:
    _, ckpt, run = load_run(path)
    if not ckpt.meta.get("complete", True):
        logger.warning("%s has not finished: its tensors are those after epoch %s", path, ckpt.meta.get("epoch"))
    bundle = build_trained_model(ckpt, device, "final", model, pretrained)
    record = run.results() if run is not None and run.state == "finished" else dict(ckpt.meta)
    if run is not None:
        record.setdefault("command", (run.record() or {}).get("command"))
    return FineTuned(bundle, ckpt, record, device, str(path))


def _from_export(folder: Path, device: torch.device, model: str | None, pretrained: str | None, ref: str) -> FineTuned:
    export = read_export(folder)
    base = export.config.get("base") or {}
    record = dict(export.config.get("record") or {})
    quick_gelu = {"quickgelu": True, "gelu": False}.get(base.get("activation"))
    if export.merged is not None and model is None and pretrained is None:
        # self-contained: the merged weights need no base weights (and carry no head: in-place recipes only)
        bundle = build_model(base["model"], str(export.merged), device, quick_gelu)
        cfg, spec = export.preprocess_cfg, bundle.preprocess
        open_clip.model.set_model_preprocess_cfg(
            bundle.model, {**open_clip.get_model_preprocess_cfg(bundle.model), **cfg}
        )
        bundle.preprocess = replace(
            spec,
            mean=tuple(cfg.get("mean", spec.mean)),
            std=tuple(cfg.get("std", spec.std)),
            interpolation=cfg.get("interpolation", spec.interpolation),
        )
        bundle.head, bundle.pretrained = ClipHead(), base.get("pretrained") or bundle.pretrained
        return FineTuned(bundle, export.delta, record, device, ref)
    if export.delta is None:
        raise ExportError(f"{folder} has no delta ({export.config.get('files')}) to apply onto other base weights")
    try:
        bundle = build_trained_model(export.delta, device, "final", model, pretrained)
    except ModelLoadError as exc:
        raise LoadError(
            f"{exc}\nThe delta in {folder} applies onto {base.get('model')} / {base.get('pretrained')}: pass those "
            "weights with clipfit.load(PATH, pretrained=FILE) (clipfit-predict --pretrained FILE)"
        ) from None
    check_base(bundle.model, export, pretrained or str(base.get("pretrained")))
    return FineTuned(bundle, export.delta, record, device, ref)


def load(
    source: str | Path,
    device: str | torch.device = "cpu",
    *,
    pretrained: str | None = None,
    model: str | None = None,
) -> FineTuned:
    """A trained model, ready to predict, embed, export and push.

    Args:
        source: a run directory of clipfit-train, its ``checkpoint.safetensors``, an export folder of
            clipfit-export, or ``hf-hub:USER/REPO`` (an export pushed to the Hugging Face Hub).
        device: ``cpu``, ``cuda``, ``cuda:1`` or ``auto``.
        pretrained: the base weights the trained tensors apply onto, when the recorded ones are not here
            (a file that moved); an export is then rebuilt from its delta rather than its merged file.
        model: the architecture, when it differs from the recorded name (it must fit the tensors).

    Raises:
        LoadError: ``source`` is none of the above; CheckpointError, ExportError, HubError, ModelLoadError: it
            could not be read, fetched or built (each message says what to do).
    """
    ref = str(source)
    device = _device(device)
    if ref.startswith(hub.PREFIX):
        folder = hub.download(ref)
        if not is_export(folder):
            raise LoadError(
                f"{ref} is not a clipfit export (no clipfit_config.json): a plain open_clip model loads with "
                f"open_clip.create_model('{ref}'), and fine-tunes with clipfit-train --pretrained {ref}"
            )
        return _from_export(folder, device, model, pretrained, ref)
    path = Path(ref).expanduser()
    if path.is_file() and is_export(path.parent):
        path = path.parent  # a file of an export folder: the folder
    if path.is_dir() and is_export(path):
        return _from_export(path, device, model, pretrained, ref)
    if path.is_file() or (path / CHECKPOINT_FILE).is_file():
        return _from_run(path, device, model, pretrained)
    what = "folder holds no checkpoint.safetensors or clipfit_config.json" if path.is_dir() else "path does not exist"
    raise LoadError(
        f"cannot load '{ref}': the {what}. clipfit.load takes a run directory of clipfit-train, its "
        "checkpoint.safetensors, an export folder of clipfit-export, or hf-hub:USER/REPO"
    )
