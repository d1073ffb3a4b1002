"""Building models from every kind of pretrained source, and the errors when a source fails."""

from __future__ import annotations

import warnings

import pytest
import torch

from clipfit.models import ModelLoadError, build_model


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_local_safetensors_file_loads_exactly(tiny_weights):
    first = build_model("clipfit-tiny", tiny_weights)
    second = build_model("clipfit-tiny", tiny_weights)
    assert first.source.startswith("local file")
    assert _same_weights(first.model, second.model)
    # and differs from a fresh random init
    assert not _same_weights(first.model, build_model("clipfit-tiny", "none").model)


@pytest.mark.parametrize("wrap", ["plain", "state_dict_key", "ddp_prefix"])
def test_local_torch_state_dict_files(tmp_path, wrap):
    torch.manual_seed(7)
    source = build_model("clipfit-tiny", "none").model
    state = source.state_dict()
    if wrap == "state_dict_key":  # training checkpoints often nest the weights
        state = {"state_dict": state, "epoch": 3}
    elif wrap == "ddp_prefix":  # saved from a DistributedDataParallel wrapper
        state = {f"module.{k}": v for k, v in state.items()}
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    loaded = build_model("clipfit-tiny", str(path)).model
    assert _same_weights(source, loaded)


def test_openai_torchscript_archive_loads_with_quick_gelu(tmp_path):
    """OpenAI's clip package caches TorchScript archives (~/.cache/clip/ViT-B-16.pt); they load directly."""
    from open_clip.transformer import QuickGELU

    torch.manual_seed(3)
    source = build_model("clipfit-tiny", "none").model
    tokens = torch.zeros(2, 77, dtype=torch.long)
    tokens[:, :2] = torch.tensor([49406, 49407])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated, but it is the format those files have
        traced = torch.jit.trace(source, (torch.randn(2, 3, 32, 32), tokens), strict=False, check_trace=False)
        path = tmp_path / "ViT-tiny.pt"
        traced.save(str(path))
        loaded = build_model("clipfit-tiny", str(path)).model
    assert _same_weights(source, loaded)
    assert any(isinstance(m, QuickGELU) for m in loaded.modules()), "OpenAI weights need QuickGELU"


def test_weights_of_another_architecture_name_the_mismatch(tiny_weights):
    with pytest.raises(ModelLoadError) as err:
        build_model("shapes-vit-tiny", tiny_weights)
    message = str(err.value)
    assert "do not fit architecture 'shapes-vit-tiny'" in message
    assert "shape mismatches" in message and "--model" in message


def test_missing_file_is_reported_as_a_path(tmp_path):
    with pytest.raises(ModelLoadError, match="weights file not found"):
        build_model("clipfit-tiny", str(tmp_path / "nope.safetensors"))


def test_unknown_tag_lists_the_known_tags():
    with pytest.raises(ModelLoadError) as err:
        build_model("ViT-B-16", "opneai")
    assert "unknown pretrained source 'opneai'" in str(err.value)
    assert "openai" in str(err.value) and "laion2b_s34b_b88k" in str(err.value)


def test_unknown_architecture_suggests_names():
    with pytest.raises(ModelLoadError) as err:
        build_model("ViT-B/16", "none")
    assert "unknown architecture 'ViT-B/16'" in str(err.value) and "ViT-B-16" in str(err.value)


def test_tag_that_cannot_be_fetched_says_which_source_and_how_to_pass_a_file(monkeypatch):
    """Offline (HF_HUB_OFFLINE=1 in the suite), fetching the openai tag fails; the message must help."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        build_model("ViT-B-32", "openai")
    message = str(err.value)
    assert "open_clip tag 'openai' for ViT-B-32" in message
    assert "hf-hub:" in message  # where it tried
    assert "--pretrained /path/to/" in message  # how to pass a local file instead
    assert "~/.cache/clip/ViT-B-32.pt" in message


def test_shapes_world_model_is_packaged():
    bundle = build_model("shapes-vit-tiny", "shapes-world")
    assert bundle.preprocess.size == 32
    assert bundle.source.startswith("clipfit tag 'shapes-world'")
    assert all(p.dtype == torch.float32 for p in bundle.model.parameters())
