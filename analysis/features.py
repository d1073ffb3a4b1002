"""Batched feature extraction: image features and per-block hidden states of both towers.

This is the code that runs models; the analyses that read its outputs are pure functions. Forward
hooks exist only inside :func:`recording`, whose ``finally`` removes them, so an exception in the
middle of a pass never leaves a hook behind on the model.

Hidden states are pooled to one vector per input the way each tower pools its output: the class
token for open_clip's ViT image tower (``pool_type`` "tok"; the patch-token mean for "avg"), the
end-of-text token for the text tower (``text_global_pool`` with the tower's pool type).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from clipfit.data.base import ImageReader, Sample
from clipfit.data.loaders import eval_loader
from clipfit.data.testcache import TestImages
from clipfit.models import PreprocessSpec
from clipfit.towers import block_output_pool, encode_text, image_input_dtype
from clipfit.towers import image_blocks as _image_blocks
from clipfit.towers import text_blocks as _text_blocks

Pool = Callable[[torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def recording(modules: Mapping[str, nn.Module], pool: Pool) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record ``pool(output)`` of every module on each forward call while the block runs.

    Yields:
        key -> list of pooled outputs (float32, on CPU), one entry per forward call.
    """
    store: dict[str, list[torch.Tensor]] = {key: [] for key in modules}
    handles = []

    def hook_for(key: str):
        def hook(_module: nn.Module, _inputs, output) -> None:
            out = output[0] if isinstance(output, tuple) else output
            store[key].append(pool(out).detach().float().cpu())

        return hook

    try:
        for key, module in modules.items():
            handles.append(module.register_forward_hook(hook_for(key)))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def image_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """``"0"``, ``"1"``, ... -> the residual blocks of the image tower."""
    return {str(i): block for i, block in enumerate(_image_blocks(model))}


def text_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """``"0"``, ``"1"``, ... -> the residual blocks of the text tower."""
    return {str(i): block for i, block in enumerate(_text_blocks(model))}


@torch.no_grad()
def image_states(
    model: nn.Module,
    samples: Sequence[Sample],
    reader: ImageReader,
    spec: PreprocessSpec,
    device: torch.device,
    batch_size: int = 256,
    blocks: bool = True,
    desc: str = "image features",
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    images: TestImages | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Pooled hidden state of every image block (keys "0", "1", ...) and the L2-normalised image
    feature (key "output"), for ``samples`` in order; plus their labels.

    ``encode`` makes the output feature from a batch (a recipe head's ``encode_images``, e.g. with
    CLIP-Adapter's adapter); ``model.encode_image`` by default. ``images``: the dataset's test split
    through the test-set cache (read when an entry exists; an analysis never writes one)."""
    pool = block_output_pool(model, "image")

    was_training = model.training
    model.eval()
    if images is not None:
        loader = images.batches(samples, batch_size, device, build=False)
    else:
        loader = eval_loader(samples, reader, spec, batch_size, 0)
    outputs, labels = [], []
    try:
        with recording(image_blocks(model) if blocks else {}, pool) as states:
            for images, targets in tqdm(loader, desc=desc, disable=None, leave=False):
                images = images.to(device, image_input_dtype(model))
                outputs.append(F.normalize((encode or model.encode_image)(images).float(), dim=-1).cpu())
                labels.append(targets)
    finally:
        model.train(was_training)
    result = {key: torch.cat(parts) for key, parts in states.items() if parts}
    result["output"] = torch.cat(outputs) if outputs else torch.zeros(0, 1)
    return result, torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def text_states(model: nn.Module, tokens: torch.Tensor, chunk: int = 256) -> dict[str, torch.Tensor]:
    """Pooled (end-of-text) hidden state of every text block and the L2-normalised text feature
    ("output") for each row of ``tokens``."""
    device = next(model.parameters()).device
    current: dict[str, torch.Tensor] = {}
    pool_block = block_output_pool(model, "text")

    def pool(out: torch.Tensor) -> torch.Tensor:
        return pool_block(out, current["tokens"])

    was_training = model.training
    model.eval()
    outputs = []
    try:
        with recording(text_blocks(model), pool) as states:
            for start in range(0, len(tokens), chunk):
                current["tokens"] = tokens[start : start + chunk].to(device)
                outputs.append(encode_text(model, current["tokens"], normalize=True).float().cpu())
    finally:
        model.train(was_training)
    result = {key: torch.cat(parts) for key, parts in states.items()}
    result["output"] = torch.cat(outputs)
    return result
