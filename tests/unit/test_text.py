"""clipfit's text forward on cut sequences equals open_clip's full-length encode_text."""

from __future__ import annotations

import torch
from checks import CLASSNAMES, assert_cut_sequences_give_the_full_length_features

from clipfit.prompts import class_tokens
from clipfit.towers import encode_text


def test_cut_sequences_give_the_full_length_features():
    assert_cut_sequences_give_the_full_length_features("clipfit-tiny")  # ViT-B-16: tests/integration


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
