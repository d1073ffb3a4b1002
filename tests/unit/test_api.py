"""clipfit.load and FineTuned: a run back in one call, predicting through its recipe's head, new class names too."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from trained_runs import CLASSNAMES, TEMPLATE, fake_run, shapes_pngs

import clipfit
from clipfit.api import LoadError
from clipfit.data.base import DataError
from clipfit.errors import ClipfitError
from clipfit.models import build_model
from clipfit.prompts import make_prompts

NEW = ["purple heart", "cyan ring", "orange cross"]


@pytest.fixture(scope="module")
def base_weights(tmp_path_factory) -> str:
    from safetensors.torch import save_file

    torch.manual_seed(1234)
    model = build_model("clipfit-tiny", "none").model
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return shapes_pngs(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, base_weights):
    """One finished fake run per recipe kind: in place, prompt context, per-image context, probe."""
    root = tmp_path_factory.mktemp("runs")
    return {
        recipe: fake_run(root / recipe, base_weights, recipe)
        for recipe in ("clipfit", "coop", "cocoop", "linear-probe")
    }


def test_import_clipfit_stays_light():
    code = "import sys, clipfit; assert callable(clipfit.__getattr__); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # the API (torch, open_clip) is imported on first use of clipfit.load
    assert clipfit.load is clipfit.api.load


def test_a_run_loads_with_its_label_space_and_the_trained_tensors(runs, base_weights):
    model = clipfit.load(runs["clipfit"])
    assert model.classnames == CLASSNAMES and model.template == TEMPLATE and model.recipe == "clipfit"
    assert model.record["metrics"]["hm"] == 56.14 and model.record["command"][0] == "clipfit-train"
    params = dict(model.model.named_parameters())
    for name, value in model.checkpoint.final.items():
        assert torch.equal(params[name], value)
    pretrained = dict(build_model("clipfit-tiny", base_weights).model.named_parameters())
    changed = {n for n, p in params.items() if not torch.equal(p, pretrained[n])}
    assert changed == set(model.checkpoint.final)  # only the trained tensors differ from the base
    assert not model.model.training


def test_predict_scores_new_class_names_with_the_fine_tuned_towers(runs, images):
    model = clipfit.load(runs["clipfit"])
    predictions = model.predict(images, classnames=NEW, top_k=2)
    assert [p.source for p in predictions] == [str(p) for p in images]
    # the logits are CLIP's, computed by hand from the fine-tuned open_clip model
    pixels = torch.stack([model.preprocess(Image.open(p)) for p in images])
    with torch.no_grad():
        image = F.normalize(model.model.encode_image(pixels), dim=-1)
        text = F.normalize(model.model.encode_text(model.tokenizer(make_prompts(TEMPLATE, NEW))), dim=-1)
        expected = (model.model.logit_scale.exp() * image @ text.T).softmax(dim=-1)
    for prediction, row in zip(predictions, expected, strict=True):
        top = row.topk(2)
        assert prediction.labels == [NEW[i] for i in top.indices.tolist()]
        assert prediction.probs == pytest.approx(top.values.tolist(), abs=1e-5)
        assert prediction.label == prediction.labels[0]
    assert len(model.predict(images[:1], top_k=50)[0].labels) == len(CLASSNAMES)  # top-k capped at the classes


@pytest.mark.parametrize("recipe", ["coop", "cocoop"])
def test_prompt_learning_heads_predict_through_their_learnt_context(runs, images, recipe):
    model = clipfit.load(runs[recipe])
    before = model.logits(images, NEW)
    assert before.shape == (len(images), len(NEW))
    with torch.no_grad():
        # the head's tensors decide the logits (noise: a uniform shift would vanish in the LayerNorms)
        model.model.prompt.ctx.add_(
            torch.randn(model.model.prompt.ctx.shape, generator=torch.Generator().manual_seed(0))
        )
    assert not torch.allclose(model.logits(images, NEW), before)
    assert [len(p.labels) for p in model.predict(images, NEW, top_k=3)] == [3] * len(images)


def test_a_linear_probe_predicts_its_own_classes_and_refuses_new_ones(runs, images):
    model = clipfit.load(runs["linear-probe"])
    predictions = model.predict(images, top_k=1)
    assert all(p.label in CLASSNAMES for p in predictions)
    with pytest.raises(ClipfitError, match="linear probe: it scores only the 4 classes"):
        model.predict(images, classnames=NEW)
    with pytest.raises(ClipfitError, match="no text side"):
        model.embed_texts(NEW)


def test_embeddings_are_normalised_and_match_between_paths_images_and_tensors(runs, images):
    model = clipfit.load(runs["clipfit"])
    from_paths = model.embed_images(images, batch_size=4)
    from_pil = model.embed_images([Image.open(p) for p in images])
    from_tensor = model.embed_images(torch.stack([model.preprocess(Image.open(p)) for p in images]))
    assert from_paths.shape == (len(images), 32)
    assert torch.allclose(from_paths.norm(dim=-1), torch.ones(len(images)))
    assert torch.allclose(from_paths, from_pil, atol=1e-6) and torch.allclose(from_paths, from_tensor, atol=1e-6)
    texts = model.embed_texts(NEW)
    assert texts.shape == (3, 32) and torch.allclose(texts.norm(dim=-1), torch.ones(3))


def test_an_unreadable_image_is_named_or_skipped(runs, images, tmp_path):
    model = clipfit.load(runs["clipfit"])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png"):
        model.predict([images[0], broken])
    predictions = model.predict([images[0], broken, tmp_path / "missing.png", images[1]], on_error="skip")
    assert [bool(p.error) for p in predictions] == [False, True, True, False]
    assert predictions[1].labels == [] and "broken.png" in predictions[1].error
    assert "missing.png: not found" in predictions[2].error and predictions[3].label in CLASSNAMES


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classnames": []}, "no class names"),
        ({"classnames": ["a", "b", "a"]}, r"\['a'\] twice"),
        ({"classnames": ["a", " "]}, "blank names"),
        ({"top_k": 0}, "top_k must be at least 1"),
        ({"on_error": "ignore"}, "on_error must be"),
    ],
)
def test_bad_arguments_are_clear_errors(runs, images, kwargs, message):
    model = clipfit.load(runs["clipfit"])
    with pytest.raises(ClipfitError, match=message):
        model.predict(images[:1], **kwargs)


def test_what_load_cannot_read_is_named(tmp_path):
    with pytest.raises(LoadError, match=r"path does not exist.*run directory of clipfit-train"):
        clipfit.load(tmp_path / "nowhere")
    with pytest.raises(LoadError, match=r"holds no checkpoint\.safetensors or clipfit_config\.json"):
        clipfit.load(tmp_path)
