"""The unit tier builds no full-size model: tiny configs, the shapes world, meta-device structure only."""

from __future__ import annotations

import open_clip
import pytest

# shapes-vit-tiny, the largest model the unit tier may build, has 8.0M parameters; ViT-B-16 has 150M.
MAX_PARAMETERS = 20_000_000


@pytest.fixture(autouse=True)
def no_full_size_models(monkeypatch):
    """Fail a unit test that builds a model of more than MAX_PARAMETERS (meta-device builds allocate nothing)."""
    create = open_clip.create_model

    def guarded(*args, **kwargs):
        model = create(*args, **kwargs)
        count = sum(p.numel() for p in model.parameters())
        if str(kwargs.get("device", "cpu")) != "meta" and count > MAX_PARAMETERS:
            pytest.fail(
                f"a unit test built {args[0] if args else kwargs.get('model_name')} ({count:,} parameters): "
                "build it on the meta device, use clipfit-tiny / clipfit-tiny-rn, or move the test to tests/integration"
            )
        return model

    monkeypatch.setattr(open_clip, "create_model", guarded)
