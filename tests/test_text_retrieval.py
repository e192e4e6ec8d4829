"""Brain<->text retrieval: caption means, hand cases in both directions, and the evaluator columns."""

from __future__ import annotations

import pytest
import torch

from brainbench.eval.evaluator import evaluate
from brainbench.metrics.text_retrieval import caption_embeddings, text_retrieval_accuracy


def test_caption_embeddings_are_normalised_means_per_stimulus() -> None:
    text = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0]])
    means = caption_embeddings(text, torch.tensor([0, 0, 1]), 2)
    torch.testing.assert_close(means, torch.tensor([[2**-0.5, 2**-0.5], [0.0, 1.0]]))


def test_hand_computed_directions_differ() -> None:
    captions = torch.eye(3)
    # Brain 0 -> caption 0 (right); brain 1 -> caption 0 (wrong); brain 2 -> caption 2 (right).
    brain = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]])
    b2t = text_retrieval_accuracy(brain, captions, direction="brain2text", pool=3, draws=1)
    # Caption 0 prefers brain 0 (1.0 vs 0.99) right; caption 1 prefers brain 1 right; caption 2 brain 2 right.
    t2b = text_retrieval_accuracy(brain, captions, direction="text2brain", pool=3, draws=1)
    assert b2t.item() == pytest.approx(2 / 3)
    assert t2b.item() == pytest.approx(1.0)


def test_evaluator_adds_text_columns_for_the_pooled_embedding() -> None:
    image = {"clip_image": torch.eye(4)}
    result = evaluate(image, image, "net", pool=4, caption_targets=torch.eye(4))
    assert result.values["retrieval_b2t_top1_subset4/net.clip_image@v1"] == 1.0
    assert result.chance["retrieval_t2b_top1_subset4/net.clip_image@v1"] == pytest.approx(0.25)
    tokens = {"clip_tokens": torch.randn(4, 3, 4)}
    unpooled = evaluate(
        tokens, tokens, "net", pool=4, caption_targets=torch.eye(4), cls_token_is_pooled=False
    )
    assert not any("b2t" in key for key in unpooled.values)  # no pooled embedding: no text column, no guess


def test_a_text_prediction_gets_text_columns_of_its_own() -> None:
    image = torch.eye(4)
    text = torch.eye(4)[[1, 0, 2, 3]]  # rows 0 and 1 swapped: half the brain->text matches are wrong
    result = evaluate({"clip_image": image, "clip_text": text}, {"clip_image": image}, "net", pool=4,
                      caption_targets=torch.eye(4), draws=1)  # fmt: skip
    assert result.values["retrieval_b2t_top1_subset4/net.clip_image@v1"] == 1.0
    assert result.values["retrieval_b2t_top1_subset4/net.clip_text@v1"] == 0.5
