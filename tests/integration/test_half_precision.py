"""``--precision half``: the released code's numerics (CoOp's "fp16"), trained, checkpointed and re-evaluated."""

from __future__ import annotations

import json

import pytest
import torch

from clipfit.cli import eval as eval_cli
from clipfit.rundir import load_checkpoint

pytestmark = pytest.mark.slow


def test_half_precision_trains_fp16_text_biases_and_reevaluates_to_the_same_numbers(train_tiny, tmp_path, capsys):
    half_dir, half = train_tiny(tmp_path / "half", precision="half")
    fp32_dir, fp32 = train_tiny(tmp_path / "fp32", precision="fp32")
    assert fp32["precision"] == "fp32"
    assert half["precision"] == "half"
    ckpt = load_checkpoint(half_dir)
    text = [n for n in ckpt.final if n.endswith("mlp.c_proj.bias")]
    image = [n for n in ckpt.final if n.startswith("visual.")]
    # as in the released code: the trained text biases are fp16 tensors, the image LayerNorms fp32 ...
    assert text and all(ckpt.init[n].dtype == ckpt.final[n].dtype == torch.float16 for n in text)
    assert image and all(ckpt.final[n].dtype == torch.float32 for n in image)
    # ... the pretrained values are the fp32 ones rounded to fp16, and every trained tensor moved
    reference = load_checkpoint(fp32_dir)
    assert all(torch.equal(ckpt.init[n], reference.init[n].half()) for n in text)
    assert all(not torch.equal(ckpt.init[n], ckpt.final[n]) for n in ckpt.final)
    # the numerics differ from fp32 training (what the option is for)
    assert any(not torch.allclose(ckpt.final[n].float(), reference.final[n], atol=1e-6) for n in text)
    # clipfit-eval rebuilds the run in half precision: its own test set gives the run's numbers exactly
    capsys.readouterr()
    assert eval_cli.main(["--checkpoint", str(half_dir), "-q"]) == 0
    printed = capsys.readouterr().out
    line = next(row for row in printed.splitlines() if row.startswith("clipfit"))
    assert [float(v) for v in line.split()[1:]] == [round(half["metrics"][k], 2) for k in ("base_acc", "new_acc", "hm")]
    assert json.loads((half_dir / "config.json").read_text())["precision"] == "half"
