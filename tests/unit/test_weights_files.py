"""Weights files are read as data, and the network is the one the weights were trained with.

The open_clip tag test puts a weights file where open_clip looks for a tag's weights, in a private
Hugging Face cache (``refs/main`` + ``snapshots/<commit>/open_clip_model.safetensors``), under a tag
registered for clipfit-tiny with OpenAI's ``quick_gelu`` flag: the same path ``ViT-B-16 / openai``
takes (tests/integration/test_real_weights_path.py runs that one for real, on a full-size file).
"""

from __future__ import annotations

import warnings
import zipfile

import open_clip
import pytest
import torch
from hf_cache import hf_cache_with
from open_clip.transformer import QuickGELU
from torch import nn

from clipfit.archives import ArchiveError, read_torch_zip, read_weights
from clipfit.cli import train
from clipfit.models import ModelLoadError, build_model


@pytest.fixture
def openai_like_tag(tmp_path, monkeypatch):
    """A tag ``fake_openai`` of clipfit-tiny whose weights sit in a private HF cache, with quick_gelu as
    open_clip's ``openai`` tags have it. Returns the weights."""
    import huggingface_hub.constants

    torch.manual_seed(5)
    weights = build_model("clipfit-tiny", "none").model.state_dict()
    cache = tmp_path / "hf-cache"
    hf_cache_with(cache, "clipfit-test/tiny.openai", weights)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    tags = dict(open_clip.pretrained._PRETRAINED.get("clipfit-tiny", {}))
    tags["fake_openai"] = open_clip.pretrained._pcfg(hf_hub="clipfit-test/tiny.openai/", quick_gelu=True)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "clipfit-tiny", tags)
    return weights


def _blocks(model: nn.Module) -> list[nn.Module]:
    return [*model.visual.transformer.resblocks, *model.transformer.resblocks]


def test_a_tag_trained_with_quick_gelu_builds_quick_gelu_in_every_block_of_the_clis_model(
    openai_like_tag, monkeypatch, capsys
):
    import clipfit.run

    built = []
    original = clipfit.run.build_model

    def recording(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(clipfit.run, "build_model", recording)
    assert train.main(["--model", "clipfit-tiny", "--pretrained", "fake_openai", "--dry-run", "-v"]) == 0
    model = built[0].model
    assert all(isinstance(block.mlp.gelu, QuickGELU) for block in _blocks(model))
    assert not any(type(m) is nn.GELU for m in model.modules())
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in openai_like_tag.items())  # the cached file's weights
    assert "model clipfit-tiny (QuickGELU activation), weights: open_clip tag 'fake_openai'" in capsys.readouterr().out


def test_an_activation_that_contradicts_the_weights_is_refused(openai_like_tag, tiny_weights, tmp_path):
    with pytest.raises(ModelLoadError, match="trained with QuickGELU, but --no-quick-gelu"):
        build_model("clipfit-tiny", "fake_openai", quick_gelu=False)
    assert build_model("clipfit-tiny", "fake_openai", quick_gelu=True).activation == "quickgelu"
    # a plain file cannot tell: the flag decides, and the log and bundle say which
    assert build_model("clipfit-tiny", tiny_weights).activation == "gelu"
    assert build_model("clipfit-tiny", tiny_weights, quick_gelu=True).activation == "quickgelu"


def test_open_clips_mismatch_warning_never_passes_silently(monkeypatch):
    real = open_clip.create_model

    def warning_create(*args, **kwargs):
        warnings.warn("QuickGELU mismatch between final model config and pretrained tag", UserWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(open_clip, "create_model", warning_create)
    with pytest.raises(ModelLoadError, match="QuickGELU mismatch"):
        build_model("clipfit-tiny", "none")


def _traced(tmp_path, name: str = "tiny.pt"):
    torch.manual_seed(3)
    source = build_model("clipfit-tiny", "none").model
    tokens = torch.zeros(2, 77, dtype=torch.long)
    tokens[:, :2] = torch.tensor([49406, 49407])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated, but it is the format OpenAI's files have
        traced = torch.jit.trace(source, (torch.randn(2, 3, 32, 32), tokens), strict=False, check_trace=False)
    path = tmp_path / name
    traced.save(str(path))
    return source, path


def test_torchscript_and_torch_save_files_load_without_torch_load(tmp_path, monkeypatch):
    source, archive = _traced(tmp_path)
    saved = tmp_path / "state.pt"
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, saved)

    def forbidden(*args, **kwargs):
        raise AssertionError("a weights file went to torch.load / torch.jit.load")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(torch.jit, "load", forbidden)
    for path, kind in ((archive, "TorchScript"), (saved, "torch.save")):
        tensors, found = read_weights(path)
        assert found == kind and set(tensors) >= set(source.state_dict()) - {"attn_mask"}
        loaded = build_model("clipfit-tiny", str(path)).model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items()), kind
    assert build_model("clipfit-tiny", str(archive)).activation == "quickgelu"  # OpenAI's archives
    with pytest.raises(ModelLoadError, match="trained with QuickGELU"):
        build_model("clipfit-tiny", str(archive), quick_gelu=False)


class _Payload(nn.Module):
    """A module whose TorchScript ``__setstate__`` runs code on load (here: prints a marker)."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
        return self.weight, self.target, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
        self.weight = state[0]
        self.target = state[1]
        self.training = state[2]
        print("payload ran for", self.target)


def test_a_torchscript_archive_with_code_runs_nothing(tmp_path, capfd):
    path = tmp_path / "evil.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(_Payload("marker-7f3a")).save(str(path))
        # the payload is live: torch.jit.load runs the archive's code (the hole this reader closes)
        torch.jit.load(str(path))
    assert "payload ran for marker-7f3a" in capfd.readouterr().out
    # read as data: its state is a tuple its own code would unpack, so no weights are found ...
    with pytest.raises(ArchiveError, match="holds no tensors"):
        read_weights(path)
    with pytest.raises(ModelLoadError, match="holds no tensors"):
        build_model("clipfit-tiny", str(path))
    assert "payload ran" not in capfd.readouterr().out  # ... and nothing in it ran


class _Reduce:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_pickle_with_a_reduce_payload_runs_nothing(tmp_path):
    target = tmp_path / "opened-by-the-file"
    path = tmp_path / "weights.bin"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hook": _Reduce(str(target))}, path)
    tensors, _ = read_weights(path)
    assert list(tensors) == ["w"] and not target.exists()


def _rewrite(src, dst, change) -> None:
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
        for info in a.infolist():
            data, compress = change(info.filename, a.read(info.filename), info.compress_type)
            b.writestr(info.filename, data, compress_type=compress)


def test_sizes_a_file_declares_are_checked_before_anything_is_allocated(tmp_path):
    # one stored value, declared as a 500-million-element stride-0 tensor: clone() would allocate 2 GB
    path = tmp_path / "lies.pt"
    torch.save({"w": torch.ones(1).as_strided((1,), (1,))}, path)
    with zipfile.ZipFile(path) as archive:
        pkl = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        text = archive.read(pkl)
    assert b"K\x01\x85" in text  # the size tuple (1,) as pickled
    liar = tmp_path / "liar.pt"
    _rewrite(path, liar, lambda n, d, c: (d.replace(b"K\x01\x85", b"J\x00\x65\xcd\x1d\x85") if n == pkl else d, c))
    with pytest.raises(ArchiveError, match="declares 500,000,000 values but its storage holds 1"):
        read_torch_zip(liar)
    # tensor bytes that expand on reading (a zip bomb) are refused: torch.save stores them uncompressed
    bomb = tmp_path / "bomb.pt"
    _rewrite(path, bomb, lambda n, d, c: (d, zipfile.ZIP_DEFLATED if "/data/" in n else c))
    with pytest.raises(ArchiveError, match="compressed"):
        read_torch_zip(bomb)


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"random bytes that are no weights file at all"])
def test_a_file_that_is_no_weights_file_gets_one_clear_error(tmp_path, content):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError) as err:
        build_model("clipfit-tiny", str(path))
    message = str(err.value)
    assert str(path) in message and "weights_only" not in message and "safetensors" in message
