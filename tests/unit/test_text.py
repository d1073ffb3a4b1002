"""clipfit's text forward on cut sequences equals open_clip's full-length encode_text."""

from __future__ import annotations

import torch

from clipfit.models import build_model
from clipfit.prompts import class_tokens, make_prompts
from clipfit.towers import cut_tokens, encode_text, supports_cut

CLASSNAMES = ["red circle", "Annual Crop Land", "a_very_long_class_name_with_many_words_in_it", "x"]


def test_cut_sequences_give_the_full_length_features():
    # ViT-B-16: tests/integration/test_full_size_models.py
    torch.manual_seed(0)
    bundle = build_model("clipfit-tiny", "none")
    model, tokenizer = bundle.model, bundle.tokenizer
    assert supports_cut(model)
    full = tokenizer(make_prompts("a photo of a {}, a type of pet.", CLASSNAMES))
    cut = cut_tokens(full)
    assert cut.shape[1] < full.shape[1] // 3  # the point: far fewer positions
    with torch.no_grad():
        reference = model.encode_text(full)
        ours = encode_text(model, cut)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_cut_keeps_every_end_of_text_token(tiny):
    tokens = class_tokens(tiny.tokenizer, tiny.model, "a photo of a {}.", CLASSNAMES)
    eot = tokens.max()
    assert (tokens == eot).sum() == len(CLASSNAMES)  # one end-of-text per row survives the cut
    assert tokens[:, -1].ne(0).any()  # the longest prompt fills the last column


def test_input_embeddings_replace_the_lookup(tiny):
    tokens = class_tokens(tiny.tokenizer, tiny.model, "a photo of a {}.", CLASSNAMES)
    other = tokens.clone()
    other[:, 2] = tiny.tokenizer(["dog"])[0, 1]  # "photo" -> "dog" in every prompt; end-of-text stays in place
    with torch.no_grad():
        embeddings = tiny.model.token_embedding(other)
        given = encode_text(tiny.model, tokens, token_embeddings=embeddings)
        # the features are those of the embedded sequence, not of the token ids passed for pooling
        torch.testing.assert_close(given, encode_text(tiny.model, other))
        assert not torch.allclose(given, encode_text(tiny.model, tokens), atol=1e-3)
