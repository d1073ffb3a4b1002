"""Original CLIPFit (Dassl) checkpoints, written here from a tiny model, read without a plain unpickle."""

from __future__ import annotations

import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from analysis.dassl import read_dassl_checkpoint, read_torch_zip
from analysis.param_change import param_change
from analysis.sources import load_source
from clipfit.checkpoint import CheckpointError
from clipfit.models import build_model
from clipfit.recipes import select

FAKE_MODULE = "dassl_for_tests.optim.lr_scheduler"


class _Payload:
    """Unpickling this with a plain unpickler would create ``marker`` (it pickles as a call to open)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _fp16_names(model: torch.nn.Module) -> set[str]:
    """What OpenAI CLIP's convert_weights casts to half: Linear/Conv weights and biases, attention
    in-projections, and the two projection matrices. LayerNorms stay fp32."""
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            names |= {f"{prefix}.{leaf}" for leaf, _ in module.named_parameters(recurse=False)}
        if isinstance(module, torch.nn.MultiheadAttention):
            names |= {f"{prefix}.in_proj_weight", f"{prefix}.in_proj_bias"}
    return names | {"visual.proj", "text_projection"}


def write_original_clipfit_checkpoint(model: torch.nn.Module, folder: Path, marker: Path, epoch: int = 10) -> dict:
    """``<folder>/prompt_learner/model.pth.tar-<epoch>`` as the released code saves it in fp16 mode.

    Returns the perturbation added to each trained tensor (open_clip names).
    """
    trained = set(select(model, "clipfit"))
    half = _fp16_names(model)
    g = torch.Generator().manual_seed(7)
    state, deltas = {}, {}
    for name, param in model.named_parameters():
        value = param.detach().clone()
        if name in trained:
            deltas[name] = 0.05 * torch.randn(value.shape, generator=g)
            value = value + deltas[name]
        value = value.half() if name in half else value
        if name.startswith("visual."):
            state["image_encoder." + name[len("visual.") :]] = value
        elif name.split(".")[0] in ("transformer", "ln_final", "positional_embedding", "text_projection"):
            state["text_encoder." + name] = value  # the prompt learner's TextEncoder has no token_embedding

    # Dassl's ConstantWarmupScheduler lives in a module that will not exist when the file is read.
    package = types.ModuleType("dassl_for_tests")
    module = types.ModuleType(FAKE_MODULE)

    class ConstantWarmupScheduler:
        def __init__(self, successor) -> None:
            self.successor, self.warmup_epoch, self.cons_lr = successor, 1, 1e-5

    ConstantWarmupScheduler.__module__ = FAKE_MODULE
    ConstantWarmupScheduler.__qualname__ = "ConstantWarmupScheduler"
    module.ConstantWarmupScheduler = ConstantWarmupScheduler
    params = [p for n, p in model.named_parameters() if n in trained]
    optimizer = torch.optim.SGD(params, lr=0.002, momentum=0.9, weight_decay=5e-4)
    sum(p.sum() for p in params).backward()
    optimizer.step()  # momentum buffers in the optimizer state, as after training
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(epoch))
    saved = dict.fromkeys(("dassl_for_tests", "dassl_for_tests.optim", FAKE_MODULE))
    sys.modules.update({"dassl_for_tests": package, "dassl_for_tests.optim": package, FAKE_MODULE: module})
    try:
        warmup = ConstantWarmupScheduler(cosine)
        scheduler_state = {k: v for k, v in vars(warmup).items() if k != "optimizer"}  # what .state_dict() returns
        scheduler_state["self"] = warmup
        path = folder / "prompt_learner" / f"model.pth.tar-{epoch}"
        path.parent.mkdir(parents=True)
        torch.save(
            {
                "state_dict": state,
                "epoch": epoch,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler_state,
                "val_result": None,
                "extra": _Payload(marker),
            },
            path,
        )
    finally:
        for name in saved:
            sys.modules.pop(name, None)
    return deltas


@pytest.fixture
def reference(tmp_path) -> tuple[torch.nn.Module, str]:
    torch.manual_seed(3)
    model = build_model("clipfit-tiny", "none").model
    path = tmp_path / "reference.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, f"clipfit-tiny:{path}"


def test_reading_needs_no_plain_unpickle(reference, tmp_path):
    model, _ = reference
    marker = tmp_path / "payload-ran"
    write_original_clipfit_checkpoint(model, tmp_path / "output", marker)
    file = tmp_path / "output" / "prompt_learner" / "model.pth.tar-10"
    assert FAKE_MODULE not in sys.modules
    with pytest.raises(Exception):  # noqa: B017 - torch's safe loader refuses these files, as the issue says
        torch.load(file, weights_only=True)
    checkpoint = read_dassl_checkpoint(tmp_path / "output")  # the output folder is found by its layout
    assert checkpoint.path == file and checkpoint.epoch == 10
    assert not marker.exists(), "the payload ran: something unpickled the file without restrictions"
    assert any(name.endswith(".open") for name in checkpoint.stubbed)  # the payload's callable became a stub
    assert f"{FAKE_MODULE}.ConstantWarmupScheduler" in checkpoint.stubbed
    assert {"torch.optim.lr_scheduler.CosineAnnealingLR", "torch.optim.sgd.SGD"} <= checkpoint.stubbed
    # names mapped to open_clip's; the fp16 text biases stay fp16 as stored, LayerNorms fp32
    tensors = checkpoint.tensors
    assert set(tensors) == {
        n for n in dict(model.named_parameters()) if n not in ("token_embedding.weight", "logit_scale")
    }
    assert tensors["transformer.resblocks.0.mlp.c_proj.bias"].dtype == torch.float16
    assert tensors["visual.ln_pre.weight"].dtype == torch.float32


def test_changes_are_measured_against_the_reference(reference, tmp_path):
    model, pretrained = reference
    deltas = write_original_clipfit_checkpoint(model, tmp_path / "output", tmp_path / "marker")
    source = load_source(tmp_path / "output", pretrained)
    assert source.kind.startswith("original CLIPFit") and source.ckpt.meta["epoch"] == 10
    assert any("ConstantWarmupScheduler" in note for note in source.notes)
    table = param_change(source.ckpt.init, source.ckpt.final).set_index("name")
    assert len(table) == 14 and table["numel"].sum() == 448
    for name, delta in deltas.items():
        # init is the reference rounded to the stored precision, so fp16 tensors differ from
        # delta only by the rounding of (theta0 + delta) to fp16
        stored = source.ckpt.final[name] - source.ckpt.init[name]
        tolerance = 2e-3 if "c_proj" in name else 1e-6
        assert torch.allclose(stored, delta, atol=tolerance), name
        assert table.loc[name, "sq_change"] == pytest.approx(float(stored.double().pow(2).sum()))


def test_a_reference_that_does_not_fit_is_refused(reference, tmp_path):
    model, _ = reference
    write_original_clipfit_checkpoint(model, tmp_path / "output", tmp_path / "marker")
    with pytest.raises(CheckpointError, match="does not fit shapes-vit-tiny:shapes-world"):
        load_source(tmp_path / "output", "shapes-vit-tiny:shapes-world")
    with pytest.raises(CheckpointError, match="differ from clipfit-tiny:none by more than rounding"):
        load_source(tmp_path / "output", "clipfit-tiny:none")  # same architecture, other weights
    with pytest.raises(CheckpointError, match="pass --pretrained MODEL:SOURCE"):
        load_source(tmp_path / "output")


def test_files_that_are_not_checkpoints(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a clipfit checkpoint"):
        load_source(text)
    archive = tmp_path / "model.pth.tar-1"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("readme.txt", "a zip, but not from torch.save")
    with pytest.raises(CheckpointError, match=r"not one written by torch\.save"):
        read_torch_zip(archive)
    tensors_only = tmp_path / "weights.pt"
    torch.save({"weight": torch.ones(2)}, tensors_only)
    with pytest.raises(CheckpointError, match="no image_encoder"):
        read_dassl_checkpoint(tensors_only)
    (tmp_path / "output").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        load_source(tmp_path / "output")


def test_a_pickle_that_tries_to_modify_a_trusted_function_is_refused(tmp_path):
    # PROTO 2; GLOBAL torch._utils._rebuild_tensor_v2; EMPTY_DICT; {"evil": 1}; BUILD; STOP:
    # a plain unpickler would set an attribute on torch's function; this reader refuses.
    data = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}X\x04\x00\x00\x00evilK\x01sb."
    path = tmp_path / "model.pth.tar-1"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
        archive.writestr("archive/byteorder", "little")
    with pytest.raises(CheckpointError, match="tries to modify"):
        read_torch_zip(path)
