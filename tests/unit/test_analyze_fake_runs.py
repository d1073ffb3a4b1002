"""clipfit-analyze on run directories written without training (tests/trained_runs.py): the seconds-cheap checks
of what the commands make of the checkpoints alone."""

from __future__ import annotations

import pytest
import torch
from trained_runs import fake_run

from analysis.commands.common import Common
from analysis.commands.param_change import ParamChangeOptions, run_param_change
from clipfit.models import build_model


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    from safetensors.torch import save_file

    torch.manual_seed(1234)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in build_model("clipfit-tiny", "none").model.state_dict().items()}, path)
    return str(path)


def test_the_pooled_seeds_caption_names_the_measure_the_figure_draws(weights, tmp_path):
    # two runs of one configuration: the figure draws their mean of --measure l2_change, and so does the caption
    runs = [str(fake_run(tmp_path / name, weights, noise=noise)) for name, noise in (("a", 0.2), ("b", 0.3))]
    figures = run_param_change(ParamChangeOptions(runs, measure="l2_change"), Common(tmp_path / "pc", []))
    pooled = next(f for f in figures if f.key == "param_change")
    assert "seeds pooled" in pooled.title
    assert pooled.caption.startswith("Per-layer l2 change, mean ± sample std over the seeds")
