"""Exports: the merged file loads in open_clip to the same logits, the delta loads in clipfit onto its base,
a head recipe's export says why it has no merged file, and the model card describes the run."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from PIL import Image
from safetensors import safe_open
from trained_runs import CLASSNAMES, fake_run, shapes_pngs

import clipfit
from clipfit.export import DELTA_FILE, MERGED_FILE, ExportError, open_clip_name
from clipfit.models import activation_of, build_model

NEW = ["purple heart", "cyan ring", "orange cross"]


def _weights(path, seed: int) -> str:
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = build_model("clipfit-tiny", "none").model
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


@pytest.fixture(scope="module")
def base_weights(tmp_path_factory) -> str:
    return _weights(tmp_path_factory.mktemp("weights") / "tiny.safetensors", 1234)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return shapes_pngs(tmp_path_factory.mktemp("images"), count=4)


def _open_clip_logits(model, finetuned, images, classnames):
    """CLIP's logits of a plain open_clip model, with the fine-tuned model's preprocessing and template."""
    pixels = torch.stack([finetuned.preprocess(Image.open(p)) for p in images])
    tokens = open_clip.get_tokenizer("clipfit-tiny")([finetuned.template.format(c) for c in classnames])
    with torch.no_grad():
        image, text, scale = model(pixels, tokens)[:3]
    return scale * image @ text.T


@pytest.mark.parametrize("quick_gelu", [None, True], ids=["gelu", "quickgelu"])
def test_the_merged_file_loads_in_open_clip_to_the_same_logits(tmp_path, base_weights, images, quick_gelu):
    run = fake_run(tmp_path / "run", base_weights, "clipfit", quick_gelu=quick_gelu)
    finetuned = clipfit.load(run)
    exported = finetuned.export(tmp_path / "export")
    expected = finetuned.logits(images, NEW)
    # by architecture name and file (clipfit-tiny has no -quickgelu twin: force_quick_gelu says it)
    assert exported.open_clip_name == "clipfit-tiny" and exported.force_quick_gelu == bool(quick_gelu)
    by_name = open_clip.create_model(
        "clipfit-tiny", pretrained=str(exported.merged), force_quick_gelu=exported.force_quick_gelu
    ).eval()
    by_folder = open_clip.create_model(f"local-dir:{exported.folder}").eval()  # the config names the activation
    for model in (by_name, by_folder):
        assert activation_of(model) == ("quickgelu" if quick_gelu else "gelu")
        assert (_open_clip_logits(model, finetuned, images, NEW) - expected).abs().max() < 1e-4
    assert any(isinstance(m, QuickGELU) for m in by_folder.modules()) == bool(quick_gelu)
    assert any(f'"{exported.folder / MERGED_FILE}"' in line for line in exported.open_clip_lines())


def test_quick_gelu_architectures_are_named_by_their_quickgelu_twin():
    assert open_clip_name("ViT-B-16", "quickgelu") == ("ViT-B-16-quickgelu", False)
    assert open_clip_name("ViT-B-16", "gelu") == ("ViT-B-16", False)
    assert open_clip_name("ViT-B-16-quickgelu", "quickgelu") == ("ViT-B-16-quickgelu", False)
    assert open_clip_name("not-an-architecture", "gelu") == (None, False)


def test_the_delta_holds_only_the_trained_tensors_and_loads_onto_its_base(tmp_path, base_weights, images):
    run = fake_run(tmp_path / "run", base_weights, "clipfit")
    finetuned = clipfit.load(run)
    exported = finetuned.export(tmp_path / "export")
    with safe_open(str(exported.delta), "pt") as handle:
        keys = set(handle.keys())
    assert keys == {f"{kind}/{n}" for kind in ("init", "final") for n in finetuned.checkpoint.final}
    expected = finetuned.logits(images, NEW)
    from_delta = clipfit.load(exported.folder, pretrained=base_weights)  # a base given: the delta path
    assert torch.allclose(from_delta.logits(images, NEW), expected, atol=1e-5)
    (exported.folder / MERGED_FILE).unlink()
    (exported.folder / "open_clip_config.json").unlink()
    from_delta = clipfit.load(exported.folder)  # no merged file: the delta onto the recorded base
    assert torch.allclose(from_delta.logits(images, NEW), expected, atol=1e-5)
    assert from_delta.classnames == CLASSNAMES and from_delta.record["metrics"]["hm"] == 56.14


def test_a_delta_onto_other_base_weights_is_refused(tmp_path, base_weights):
    exported = clipfit.load(fake_run(tmp_path / "run", base_weights, "clipfit")).export(tmp_path / "export")
    other = _weights(tmp_path / "other.safetensors", 99)
    with pytest.raises(ExportError, match=r"not the ones the delta .* was trained on"):
        clipfit.load(exported.folder, pretrained=other)
    with pytest.raises(clipfit.api.LoadError, match=r"pass those weights with clipfit\.load"):
        clipfit.load(exported.folder, pretrained=str(tmp_path / "moved.safetensors"))


@pytest.mark.parametrize("recipe", ["coop", "cocoop", "maple", "clip-adapter", "linear-probe"])
def test_a_head_recipe_exports_its_delta_and_says_why_there_is_no_merged_file(tmp_path, base_weights, images, recipe):
    finetuned = clipfit.load(fake_run(tmp_path / "run", base_weights, recipe))
    with pytest.raises(ExportError, match="merged open_clip file cannot hold it"):
        finetuned.export(tmp_path / "refused", merged=True)
    exported = finetuned.export(tmp_path / "export")
    assert exported.merged is None and "head" in exported.why_no_merged
    assert sorted(p.name for p in exported.folder.iterdir()) == ["README.md", "clipfit_config.json", DELTA_FILE]
    assert "No merged open_clip file: the " in (exported.folder / "README.md").read_text()
    classnames = None if recipe == "linear-probe" else NEW
    loaded = clipfit.load(exported.folder)
    assert type(loaded.head) is type(finetuned.head)
    assert torch.allclose(loaded.logits(images, classnames), finetuned.logits(images, classnames), atol=1e-5)


def test_a_delta_only_export_replaces_an_earlier_merged_one(tmp_path, base_weights):
    finetuned = clipfit.load(fake_run(tmp_path / "run", base_weights, "clipfit"))
    finetuned.export(tmp_path / "export")
    exported = finetuned.export(tmp_path / "export", merged=False)
    assert exported.merged is None and not (tmp_path / "export" / MERGED_FILE).exists()
    config = json.loads((tmp_path / "export" / "clipfit_config.json").read_text())
    assert config["files"] == {"delta": DELTA_FILE, "merged": None}
    assert config["base"]["model"] == "clipfit-tiny" and config["base"]["pretrained"] == base_weights


def test_the_model_card_names_the_run_its_results_and_how_to_load_it(tmp_path, base_weights):
    finetuned = clipfit.load(fake_run(tmp_path / "run", base_weights, "clipfit"))
    card = (finetuned.export(tmp_path / "export", repo="me/tiny").folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: open_clip\n")
    assert finetuned.record["signature"] in card
    assert "clipfit       61.00   52.00   56.14" in card  # the run's results table against zero-shot
    assert 'clipfit.load("hf-hub:me/tiny")' in card and 'open_clip.create_model("hf-hub:me/tiny")' in card
    assert "clipfit-train --model clipfit-tiny --recipe clipfit" in card
