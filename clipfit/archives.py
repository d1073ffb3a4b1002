"""PyTorch files read as data: tensors out, no code run, no size believed.

Every weights file or checkpoint a user hands in goes through here: safetensors files, the zip
archives ``torch.save`` writes (open_clip ``.bin``/``.pt``, training checkpoints of the original
CLIPFit code) and the TorchScript archives OpenAI's ``clip`` package caches
(``~/.cache/clip/ViT-B-16.pt``). None of them is handed to ``torch.load`` or ``torch.jit.load``:
both can run code named by the file (``torch.jit.load`` runs a TorchScript archive's
``__setstate__``; a plain ``torch.load`` any ``__reduce__``).

Instead :func:`read_torch_zip` opens the zip archive itself, reads each tensor's bytes, and
unpickles ``data.pkl`` with :class:`RestrictedUnpickler`, which resolves exactly the globals in
:data:`ALLOWED` (tensor and parameter rebuilders reimplemented here, OrderedDict, plain containers,
storage type markers) and turns every other class or function the file names into an inert
:class:`Stub` that records its arguments and runs nothing. A TorchScript archive pickles its module
tree as such objects (``__torch__.<module path>.<Class>`` with an attribute dict), so its state dict
is the tensors found walking the stubs (:func:`torchscript_state_dict`); the archive's ``code/``
is never read.

Sizes declared by the file are checked against the bytes it holds before anything is allocated:
tensor data must be stored uncompressed (as ``torch.save`` writes it, so a small file cannot
expand), and a tensor may not have more elements than its storage (a stride-0 view of one value
declared as a billion-element tensor would otherwise allocate gigabytes on ``clone``).
"""

from __future__ import annotations

import io
import math
import pickle
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from clipfit.checkpoint import CheckpointError


class ArchiveError(CheckpointError):
    """A file is not a weights file or checkpoint of a supported format, or it is broken or hostile."""


_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}


class _StorageType:
    """What a storage class (or dtype) name in the pickle resolves to: just its dtype."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("the file tries to modify a storage type")


class _Trusted:
    """An allowed function as the pickle sees it: callable, never modifiable (BUILD is refused)."""

    __slots__ = ("target",)

    def __init__(self, target) -> None:
        self.target = target

    def __call__(self, *args: Any) -> Any:
        return self.target(*args)

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("the file tries to modify a function it calls")


class Stub:
    """Stands in for a class or function the file names but this reader does not trust.

    Constructing, calling or restoring state only records the arguments; no code of the named
    object ever runs. ``origin`` says what the file asked for.
    """

    origin = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Stub:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<stub of {self.origin}>"


def _stub_class(module: str, name: str) -> type[Stub]:
    return type(name, (Stub,), {"origin": f"{module}.{name}", "__module__": __name__})


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_: Any) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, metadata])."""
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError("a tensor refers to something that is not a storage")
    size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(offset)
    if len(size) != len(stride) or any(s < 0 for s in (*size, *stride, offset)):
        raise pickle.UnpicklingError(f"a tensor declares an invalid shape {size} / stride {stride}")
    numel = math.prod(size)
    if numel > storage.numel():  # a tensor of real weights never holds more values than its storage
        raise pickle.UnpicklingError(
            f"a tensor declares {numel:,d} values but its storage holds {storage.numel():,d}: the file lies about sizes"
        )
    if numel and offset + sum((s - 1) * st for s, st in zip(size, stride, strict=True)) >= storage.numel():
        raise pickle.UnpicklingError("a tensor reaches past the end of its storage")
    return storage.as_strided(size, stride, offset).clone()


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, *_: Any) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v3 (untyped storage + explicit dtype)."""
    if not isinstance(storage, torch.Tensor) or not isinstance(dtype, _StorageType):
        raise pickle.UnpicklingError("unsupported tensor encoding")
    return _rebuild_tensor(storage.view(dtype.dtype), offset, size, stride)


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    """torch._utils._rebuild_parameter(data, requires_grad, hooks[, state]): keep the plain tensor."""
    return data


def _plain_dict(*_: Any) -> dict:
    """collections.defaultdict(factory): a plain dict, the factory (possibly a stub) is dropped."""
    return {}


# Exactly the globals a torch.save'd checkpoint needs for its tensors and containers. Functions are
# reimplemented here and handed out wrapped (a fresh _Trusted per lookup); the classes are immutable
# builtin types; storage and dtype names become fresh _StorageType markers.
ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "defaultdict"): _plain_dict,
    ("collections", "OrderedDict"): OrderedDict,
    # plain containers (protocol 2 names the builtins module "__builtin__")
    **{(module, c.__name__): c for module in ("builtins", "__builtin__") for c in (dict, list, set, frozenset, tuple)},
    **{("torch", name): dtype for name, dtype in _STORAGE_DTYPES.items()},
    # dtypes (the dtype argument of _rebuild_tensor_v3) pickle as torch.<name>
    **{("torch", str(dtype).split(".")[1]): dtype for dtype in set(_STORAGE_DTYPES.values())},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only :data:`ALLOWED`; any other global becomes a :class:`Stub` subclass."""

    def __init__(self, file: io.BufferedIOBase, load_storage) -> None:
        super().__init__(file)
        self._load_storage = load_storage
        self.stubbed: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED:
            target = ALLOWED[(module, name)]
            if isinstance(target, torch.dtype):
                return _StorageType(target)
            return target if isinstance(target, type) else _Trusted(target)
        self.stubbed.add(f"{module}.{name}")
        return _stub_class(module, name)

    def persistent_load(self, pid: Any) -> torch.Tensor:
        # torch.save and TorchScript write ("storage", storage_type, key, location, numel) for every storage.
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        return self._load_storage(str(key), storage_type.dtype, int(numel))


def _archive_prefix(archive: zipfile.ZipFile, path: Path) -> str:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ArchiveError(f"{path} is a zip file but not one written by torch.save (no single <name>/data.pkl)")
    return pickles[0][: -len("/data.pkl")]


def is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (its zip holds ``constants.pkl`` and ``code/``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") for n in archive.namelist())


def read_torch_zip(path: str | Path) -> tuple[Any, set[str]]:
    """The object ``torch.save`` (or TorchScript) stored in ``path``, with untrusted classes as stubs.

    Returns:
        (object, names of the globals that were replaced by stubs).

    Raises:
        ArchiveError: not a torch.save zip archive (also the pre-1.6 legacy format), broken, or lying
            about its sizes.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ArchiveError(
            f"{path} is not a PyTorch file written by torch.save (torch >= 1.6 zip format); files of the legacy "
            "format can be re-saved with torch.save, or as safetensors, on a machine that trusts them"
        )
    with zipfile.ZipFile(path) as archive:
        prefix = _archive_prefix(archive, path)
        names = set(archive.namelist())
        byteorder = archive.read(f"{prefix}/byteorder").decode().strip() if f"{prefix}/byteorder" in names else "little"
        if byteorder != sys.byteorder:
            raise ArchiveError(f"{path} was written on a {byteorder}-endian machine; this reader needs {sys.byteorder}")
        storages: dict[str, torch.Tensor] = {}

        def load_storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
            if key not in storages:
                record = f"{prefix}/data/{key}"
                if record not in names:
                    raise pickle.UnpicklingError(f"missing tensor data {record}")
                info = archive.getinfo(record)
                itemsize = torch.empty(0, dtype=dtype).element_size()
                if info.compress_type != zipfile.ZIP_STORED or info.file_size != numel * itemsize:
                    raise pickle.UnpicklingError(
                        f"tensor data {key} declares {numel:,d} {dtype} values but the archive holds "
                        f"{info.file_size:,d} bytes{' compressed' if info.compress_type != zipfile.ZIP_STORED else ''}"
                    )
                raw = bytearray(archive.read(record))
                storages[key] = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
            flat = storages[key]
            itemsize = torch.empty(0, dtype=dtype).element_size()
            if flat.numel() % itemsize:
                raise pickle.UnpicklingError(f"tensor data {key} does not hold whole {dtype} values")
            return flat.view(dtype)

        unpickler = RestrictedUnpickler(io.BytesIO(archive.read(f"{prefix}/data.pkl")), load_storage)
        try:
            obj = unpickler.load()
        except Exception as exc:  # whatever a broken or hostile pickle makes fail, it is not a checkpoint
            raise ArchiveError(f"{path} could not be read as a PyTorch file: {type(exc).__name__}: {exc}") from exc
    return obj, unpickler.stubbed


def torchscript_state_dict(root: Any) -> dict[str, torch.Tensor]:
    """The tensors of a TorchScript module tree (stubs with attribute dicts), by dotted attribute path.

    Parameters and buffers are the module's tensor attributes, so the names are those of the
    module's ``state_dict()``.
    """
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def walk(node: Any, prefix: str) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        state = node.state if isinstance(node, Stub) else None
        if not isinstance(state, Mapping):
            return
        for key, value in state.items():
            name = f"{prefix}{key}"
            if isinstance(value, torch.Tensor):
                tensors[name] = value
            elif isinstance(value, Stub):
                walk(value, f"{name}.")

    walk(root, "")
    return tensors


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The weights in what a torch.save file held: a state dict, nested under "state_dict", or a module tree."""
    if isinstance(obj, Stub):
        state = torchscript_state_dict(obj)
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state = dict(obj["state_dict"])
    elif isinstance(obj, Mapping):
        state = dict(obj)
    else:
        raise ArchiveError(f"{path} holds a {type(obj).__name__}, not weights (a state dict of tensors)")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ArchiveError(f"{path} holds no tensors: not a weights file")
    if all(k.startswith("module.") for k in tensors):  # saved from a DistributedDataParallel wrapper
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a weights file, and its format (``safetensors``, ``torch.save`` or ``TorchScript``).

    Raises:
        ArchiveError: a file of none of these formats, broken, or hostile; the message names it.
    """
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(8)
    if zipfile.is_zipfile(path):
        obj, _ = read_torch_zip(path)
        return _state_dict_of(obj, path), "TorchScript" if is_torchscript(path) else "torch.save"
    if len(head) == 8 and int.from_bytes(head, "little") < path.stat().st_size:  # a safetensors header length
        try:
            return load_file(str(path)), "safetensors"
        except (SafetensorError, OSError, ValueError) as exc:
            raise ArchiveError(f"{path} could not be read as a safetensors file: {exc}") from None
    raise ArchiveError(
        f"{path} is not a weights file clipfit reads: expected safetensors (.safetensors), a zip archive written "
        "by torch.save (.bin, .pt, .pth) or an OpenAI TorchScript archive (.pt)"
    )
