"""Decoding a test split's images into the test transform's uint8 pixels, for the test-set cache and evaluation.

:func:`_decoded_batches` runs the test transform (:func:`clipfit.data.transforms.test_pixels`) in DataLoader workers
and hands back uint8 batches in the split's order; :mod:`clipfit.data.testcache` evaluates them and writes them into
an entry.

Decoders (chosen by :class:`clipfit.data.testcache.CachePolicy`): ``pil``, the default, is the test transform
itself. ``nvjpeg`` (:class:`GpuJpegDecoder`) decodes 8-bit three-component JPEGs on the GPU in batches
(``torchvision.io.decode_jpeg``) and resizes them there; PNGs, grayscale, CMYK and anything the GPU decoder refuses
go through PIL (:func:`jpeg_kind` reads a file's header to tell). Its pixels are not PIL's (another IDCT and chroma
upsampling, torchvision's resize): accuracies can differ from ``pil`` by a few images.
"""

from __future__ import annotations

import io
import logging
import struct
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from clipfit.data.base import FileReader, ImageReader, Sample
from clipfit.data.transforms import test_pixels
from clipfit.models import PreprocessSpec

logger = logging.getLogger(__name__)


def jpeg_kind(data: bytes) -> str:
    """What a file's header says about decoding it on a GPU: ``"ycbcr"`` for an 8-bit, three-component,
    Huffman-coded JPEG (baseline, extended or progressive) that is not Adobe-RGB coded; otherwise why not
    (``"not jpeg"``, ``"grayscale"``, ``"cmyk"``, ``"rgb"``, ``"12-bit"``, ``"lossless or arithmetic"``,
    ``"truncated"``)."""
    if data[:2] != b"\xff\xd8":
        return "not jpeg"
    pos, adobe_rgb = 2, False
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return "truncated"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xEE and segment[:5] == b"Adobe" and len(segment) >= 12:
            adobe_rgb = segment[11] == 0  # transform 0: the three components are R, G, B, not YCbCr
        if marker in (0xC0, 0xC1, 0xC2):
            if len(segment) < 6:
                return "truncated"
            precision, components = segment[0], segment[5]
            if precision != 8:
                return f"{precision}-bit"
            if components == 1:
                return "grayscale"
            if components == 4:
                return "cmyk"
            if components != 3:
                return f"{components} components"
            return "rgb" if adobe_rgb else "ycbcr"
        if 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return "lossless or arithmetic"
        if marker == 0xDA:  # start of scan before any frame header
            return "truncated"
        pos += 2 + length
    return "truncated"


class _Decode(TorchDataset):
    """(position, kind, tensor) per sample: the test transform's uint8 pixels (kind "pixels"), or, for the GPU
    decoder, the raw bytes of a JPEG it can read (kind "jpeg")."""

    def __init__(self, samples: Sequence[Sample], reader: ImageReader, spec: PreprocessSpec, jpeg_root: Path | None):
        self.samples, self.reader, self.transform, self.jpeg_root = list(samples), reader, test_pixels(spec), jpeg_root

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[int, str, torch.Tensor]:
        path = self.samples[index].path
        if self.jpeg_root is not None:
            try:
                data = (self.jpeg_root / path).read_bytes()
            except OSError:
                data = b""  # the reader names the problem below
            if jpeg_kind(data) == "ycbcr":
                return index, "jpeg", torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return index, "pixels", self.transform(self.reader(path))


def _collate(items: list[tuple[int, str, torch.Tensor]]) -> tuple[list[int], list[int], Any, list[int], Any]:
    """Stack decoded pixels and concatenate JPEG bytes in the worker: two tensors cross to the main process,
    not one per image."""
    positions = [p for p, _, _ in items]
    done = [k for k, (_, kind, _) in enumerate(items) if kind == "pixels"]
    jpegs = [k for k, (_, kind, _) in enumerate(items) if kind == "jpeg"]
    pixels = torch.stack([items[k][2] for k in done]) if done else None
    blob = (torch.cat([items[k][2] for k in jpegs]), [len(items[k][2]) for k in jpegs]) if jpegs else None
    return positions, done, pixels, jpegs, blob


def pil_pixels(data: bytes, spec: PreprocessSpec) -> torch.Tensor:
    """The test transform's pixels of an encoded image (how the GPU decoder's fallback reads it)."""
    with Image.open(io.BytesIO(data)) as image:
        return test_pixels(spec)(image.convert("RGB"))


class GpuJpegDecoder:
    """Decodes batches of JPEG bytes on ``device`` and resizes and crops them there; any image it cannot decode
    (the whole batch failing, then that image alone) is decoded by PIL. ``decode`` is
    ``torchvision.io.decode_jpeg`` (a list of byte tensors, ``device=``, ``mode=``); tests pass a fake."""

    def __init__(
        self,
        spec: PreprocessSpec,
        device: torch.device | str,
        decode: Callable | None = None,
        stats: Counter[str] | None = None,
    ) -> None:
        self.spec, self.device = spec, torch.device(device)
        if decode is None:
            from torchvision.io import decode_jpeg

            decode = decode_jpeg
        self.decode = decode
        self.stats: Counter[str] = stats if stats is not None else Counter()

    def _finish(self, image: torch.Tensor) -> torch.Tensor:
        import torchvision.transforms.functional as TF

        from clipfit.data.transforms import interpolation

        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"decoded to shape {tuple(image.shape)}")
        image = TF.resize(image, self.spec.size, interpolation=interpolation(self.spec), antialias=True)
        return TF.center_crop(image, self.spec.size).cpu()

    def _one(self, data: torch.Tensor) -> torch.Tensor:
        from torchvision.io import ImageReadMode

        try:
            out = self._finish(self.decode([data], device=self.device, mode=ImageReadMode.RGB)[0])
            self.stats["gpu"] += 1
            return out
        except Exception as exc:  # the GPU decoder refused this image: PIL reads it
            logger.debug("GPU JPEG decoding failed (%s: %s); decoding with PIL", type(exc).__name__, exc)
            self.stats["fallback"] += 1
            return pil_pixels(data.numpy().tobytes(), self.spec)

    def __call__(self, jpegs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        from torchvision.io import ImageReadMode

        try:
            decoded = self.decode(list(jpegs), device=self.device, mode=ImageReadMode.RGB)
            out = [self._finish(image) for image in decoded]
            self.stats["gpu"] += len(out)
            return out
        except Exception as exc:
            logger.debug("GPU JPEG batch decoding failed (%s: %s); one image at a time", type(exc).__name__, exc)
            return [self._one(data) for data in jpegs]


def _decoded_batches(
    samples: Sequence[Sample],
    reader: ImageReader,
    spec: PreprocessSpec,
    batch_size: int,
    num_workers: int,
    gpu: GpuJpegDecoder | None,
    stats: Counter,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(positions, uint8 (B, 3, S, S)) over ``samples`` in order, decoded in ``num_workers`` DataLoader workers
    (and JPEGs on the GPU when ``gpu`` is given)."""
    jpeg_root = reader.root if gpu is not None and isinstance(reader, FileReader) else None
    loader = DataLoader(
        _Decode(samples, reader, spec, jpeg_root),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        persistent_workers=False,
    )
    for positions, done, pixels, jpegs, blob in loader:
        out = torch.empty((len(positions), 3, spec.size, spec.size), dtype=torch.uint8)
        if done:
            out[done] = pixels
            stats["decoded"] += len(done)
        if jpegs:
            assert gpu is not None
            data, lengths = blob
            out[jpegs] = torch.stack(gpu(list(torch.split(data, lengths))))
        yield positions, out
