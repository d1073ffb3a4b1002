"""Checkpoints of the original CLIPFit code (Dassl format), read without a plain unpickle.

The released code (CoOp/Dassl) saves ``<output>/prompt_learner/model.pth.tar-<epoch>`` with
``torch.save`` of a dict ``{"state_dict", "epoch", "optimizer", "scheduler", "val_result"}``.
``state_dict`` is the prompt learner's: ``image_encoder.*`` (CLIP's visual tower) and
``text_encoder.*`` (transformer, positional_embedding, ln_final, text_projection). In the default
fp16 mode the Linear/attention weights and biases, among them the trained text FFN biases, are
half precision; LayerNorms stay fp32. ``scheduler`` is the state of Dassl's
ConstantWarmupScheduler, whose ``successor`` is a pickled CosineAnnealingLR object holding the
SGD optimizer, so ``torch.load(weights_only=True)`` refuses these files and a plain ``torch.load``
would run whatever classes the file names.

:func:`read_torch_zip` never does either. It opens the zip archive ``torch.save`` writes, reads
the tensor bytes itself, and unpickles ``data.pkl`` with :class:`RestrictedUnpickler`, which
resolves exactly the globals in :data:`ALLOWED` (tensor and parameter rebuilders reimplemented
here, OrderedDict, storage type markers) and turns every other class or function the file names
into an inert :class:`Stub` that records its arguments and runs nothing. Only ``state_dict`` is
used; the optimizer and scheduler come back as stubs and are ignored.

Names map to open_clip's: ``image_encoder.X`` -> ``visual.X``, ``text_encoder.X`` -> ``X``
(OpenAI CLIP and open_clip name the towers' parameters alike).
"""

from __future__ import annotations

import io
import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipfit.checkpoint import CheckpointError
from clipfit.rundir import CHECKPOINT_FILE

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
_CHECKPOINT_NAME = re.compile(r"^model\.pth\.tar-(\d+)$")


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
    return storage.as_strided(tuple(size), tuple(stride), int(offset)).clone()


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


# Exactly the globals a torch.save'd training checkpoint needs for its tensors and containers.
# Functions are reimplemented here and handed out wrapped (a fresh _Trusted per lookup); the
# classes are immutable builtin types; storage and dtype names become fresh _StorageType markers.
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
        # torch.save writes ("storage", storage_type, key, location, numel) for every storage.
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        return self._load_storage(str(key), storage_type.dtype, int(numel))


def _archive_prefix(archive: zipfile.ZipFile, path: Path) -> str:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError(f"{path} is a zip file but not one written by torch.save (no single <name>/data.pkl)")
    return pickles[0][: -len("/data.pkl")]


def read_torch_zip(path: str | Path) -> tuple[Any, set[str]]:
    """The object ``torch.save`` stored in ``path``, with untrusted classes as stubs.

    Returns:
        (object, names of the globals that were replaced by stubs).

    Raises:
        CheckpointError: not a torch.save zip archive (also the pre-1.6 legacy format), or broken.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint written by torch.save (torch >= 1.6 zip format); "
            "checkpoints of the legacy format can be re-saved with torch.save on a machine that trusts them"
        )
    with zipfile.ZipFile(path) as archive:
        prefix = _archive_prefix(archive, path)
        names = set(archive.namelist())
        byteorder = archive.read(f"{prefix}/byteorder").decode().strip() if f"{prefix}/byteorder" in names else "little"
        if byteorder != sys.byteorder:
            raise CheckpointError(
                f"{path} was written on a {byteorder}-endian machine; this reader needs {sys.byteorder}"
            )
        storages: dict[str, torch.Tensor] = {}

        def load_storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
            if key not in storages:
                record = f"{prefix}/data/{key}"
                if record not in names:
                    raise pickle.UnpicklingError(f"missing tensor data {record}")
                raw = bytearray(archive.read(record))
                flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
                storages[key] = flat
            flat = storages[key]
            itemsize = torch.empty(0, dtype=dtype).element_size()
            if flat.numel() % itemsize:
                raise pickle.UnpicklingError(f"tensor data {key} does not hold whole {dtype} values")
            return flat.view(dtype)

        unpickler = RestrictedUnpickler(io.BytesIO(archive.read(f"{prefix}/data.pkl")), load_storage)
        try:
            obj = unpickler.load()
        except Exception as exc:  # whatever a broken or hostile pickle makes fail, it is not a checkpoint
            raise CheckpointError(
                f"{path} could not be read as a PyTorch checkpoint: {type(exc).__name__}: {exc}"
            ) from exc
    return obj, unpickler.stubbed


def find_checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file of a Dassl output: the file itself, ``<dir>/model.pth.tar-<N>`` with the
    largest N (or ``model-best.pth.tar``), also one level down in ``prompt_learner/``."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    for folder in (path / "prompt_learner", path):
        if not folder.is_dir():
            continue
        epochs = sorted(
            (int(m.group(1)), f) for f in folder.iterdir() if (m := _CHECKPOINT_NAME.match(f.name)) and f.is_file()
        )
        if epochs:
            return epochs[-1][1]
        if (folder / "model-best.pth.tar").is_file():
            return folder / "model-best.pth.tar"
    raise CheckpointError(
        f"no checkpoint at {path}: expected a clipfit-train run directory, a checkpoint.safetensors file, "
        "or an original CLIPFit output (prompt_learner/model.pth.tar-<epoch>)"
    )


def looks_like_dassl(path: str | Path) -> bool:
    """Whether ``path`` is (or holds) a torch.save zip archive rather than a clipfit checkpoint."""
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / CHECKPOINT_FILE).exists():
            return False
        try:
            path = find_checkpoint_file(path)
        except CheckpointError:
            return False
    return path.is_file() and zipfile.is_zipfile(path)


def open_clip_name(key: str) -> str | None:
    """``image_encoder.X`` -> ``visual.X``, ``text_encoder.X`` -> ``X``; None for other keys."""
    for prefix in ("module.", "prompt_learner."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    if key.startswith("image_encoder."):
        return "visual." + key[len("image_encoder.") :]
    if key.startswith("text_encoder."):
        return key[len("text_encoder.") :]
    return None


@dataclass
class DasslCheckpoint:
    """The usable part of an original CLIPFit checkpoint."""

    path: Path
    tensors: dict[str, torch.Tensor]  # open_clip names -> stored values (fp16 or fp32, as saved)
    epoch: int | None
    stubbed: set[str]  # classes and functions of the file that were not trusted (the scheduler's, ...)


def read_dassl_checkpoint(path: str | Path) -> DasslCheckpoint:
    """Read the ``state_dict`` of an original CLIPFit checkpoint under open_clip names.

    Raises:
        CheckpointError: not a torch checkpoint, no ``state_dict``, or no image/text encoder tensors.
    """
    file = find_checkpoint_file(path)
    obj, stubbed = read_torch_zip(file)
    state = obj.get("state_dict") if isinstance(obj, Mapping) else None
    if state is None and isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj  # a bare state dict saved on its own
    if not isinstance(state, Mapping):
        keys = f" with keys {', '.join(map(str, list(obj)[:6]))}" if isinstance(obj, Mapping) else ""
        raise CheckpointError(
            f"{file} is a PyTorch file but not a CLIPFit (Dassl) checkpoint: no 'state_dict' "
            f"(it holds a {type(obj).__name__}{keys})"
        )
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = open_clip_name(str(key))
        if name is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{file}: state_dict entry {key} is not a tensor ({value!r})")
        tensors[name] = value
    if not tensors:
        raise CheckpointError(
            f"{file} has a state_dict but no image_encoder.* / text_encoder.* tensors: "
            "not a checkpoint of the original CLIPFit code"
        )
    epoch = obj.get("epoch") if isinstance(obj, Mapping) else None
    return DasslCheckpoint(file, tensors, epoch if isinstance(epoch, int) else None, stubbed)
