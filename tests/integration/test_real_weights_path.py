"""The default model, CLIP ViT-B/16 with OpenAI's weights, is built as OpenAI trained it.

No real weights can be downloaded here, so a random ViT-B-16 file sits where open_clip looks for the
``openai`` tag's weights: a private Hugging Face cache holding
``timm/vit_base_patch16_clip_224.openai`` (``refs/main`` + ``snapshots/<commit>/open_clip_model.safetensors``).
"""

from __future__ import annotations

import pytest
import torch
from hf_cache import hf_cache_with
from open_clip.transformer import QuickGELU

from clipfit.cli import train
from clipfit.models import build_model

pytestmark = pytest.mark.slow


def test_the_default_vit_b16_openai_model_has_quick_gelu_in_every_block(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    import clipfit.run

    torch.manual_seed(0)
    weights = {k: v.half() for k, v in build_model("ViT-B-16", "none").model.state_dict().items()}
    cache = tmp_path / "hf-cache"
    hf_cache_with(cache, "timm/vit_base_patch16_clip_224.openai", weights)
    del weights
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    built = []
    original = clipfit.run.build_model
    monkeypatch.setattr(clipfit.run, "build_model", lambda *a, **k: built.append(original(*a, **k)) or built[-1])
    # --model ViT-B-16 with the default --pretrained (openai), as the paper's runs use it
    assert train.main(["--model", "ViT-B-16", "--dry-run", "-v"]) == 0
    out = capsys.readouterr().out
    assert "model ViT-B-16 (QuickGELU activation), weights: open_clip tag 'openai'" in out
    assert "trainable params: 46,080 || all params: 149,620,737 || trainable%: 0.0308" in out
    model = built[0].model
    blocks = [*model.visual.transformer.resblocks, *model.transformer.resblocks]
    assert len(blocks) == 24 and all(isinstance(block.mlp.gelu, QuickGELU) for block in blocks)
