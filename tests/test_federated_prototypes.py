"""PmcmFL's prototype library against hand-computed tensors (update, aggregation, contrast, fills)."""

import math

import pytest
import torch

from brainbench.federated.model import fill_missing
from brainbench.federated.prototypes import (
    aggregate_library,
    aggregate_prototypes,
    class_prototypes,
    init_prototypes,
    prototype_contrast,
)


def test_class_prototypes_are_label_weighted_means_and_keep_absent_classes():
    reps = torch.tensor([[1.0, 2.0], [3.0, 6.0], [10.0, 0.0]])
    # sample 0: classes 0 and 2; sample 1: class 0 (soft 0.5); sample 2: class 2
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.5, 0.0, 0.0], [0.0, 0.0, 1.0]])
    previous = torch.tensor([[-1.0, -1.0], [7.0, 8.0], [-1.0, -1.0]])
    out = class_prototypes(reps, labels, previous)
    # class 0: (1*[1,2] + 0.5*[3,6]) / 1.5 = [2.5/1.5, 5/1.5]
    assert torch.allclose(out[0], torch.tensor([2.5 / 1.5, 5.0 / 1.5]))
    assert torch.equal(out[1], torch.tensor([7.0, 8.0]))  # no sample of class 1: kept
    assert torch.allclose(out[2], torch.tensor([5.5, 1.0]))  # ([1,2] + [10,0]) / 2
    assert torch.equal(previous[0], torch.tensor([-1.0, -1.0]))  # not modified in place


def test_aggregation_weights_by_one_plus_counts_and_renormalises_over_nonzero_rows():
    site_a = torch.tensor([[1.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
    site_b = torch.tensor([[4.0, 1.0], [3.0, 3.0], [0.0, 0.0]])
    site_c = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 0.0]])
    out = aggregate_prototypes([site_a, site_b, site_c], [1, 3, 4])  # weights 2/12, 4/12, 5/12
    wa, wb, wc = 2 / 12, 4 / 12, 5 / 12
    expected = torch.tensor(
        [
            [(wa * 1 + wb * 4) / (wa + wb), (wa * 1 + wb * 1) / (wa + wb)],
            [(wb * 3 + wc * 6) / (wb + wc), (wb * 3) / (wb + wc)],
            [2.0, 0.0],  # only site a has class 2: its row back
        ]
    )
    assert torch.allclose(out, expected)


def test_aggregation_of_a_class_no_site_saw_stays_zero():
    zero = torch.zeros(2, 3)
    assert torch.equal(aggregate_prototypes([zero, zero], [5, 5]), zero)


def test_aggregate_library_uses_each_modality_count():
    lib_a = {m: torch.full((1, 1), 1.0) for m in ("fmri", "image", "text", "fusion")}
    lib_b = {m: torch.full((1, 1), 3.0) for m in ("fmri", "image", "text", "fusion")}
    counts_a = {"fmri": 9, "image": 0, "text": 9, "fusion": 0}
    counts_b = {"fmri": 9, "image": 9, "text": 0, "fusion": 0}
    out = aggregate_library([lib_a, lib_b], [counts_a, counts_b])
    assert float(out["fmri"]) == pytest.approx(2.0)
    assert float(out["image"]) == pytest.approx((1 * 1 + 10 * 3) / 11)
    assert float(out["text"]) == pytest.approx((10 * 1 + 1 * 3) / 11)
    assert float(out["fusion"]) == pytest.approx(2.0)


def test_prototype_contrast_is_cross_entropy_over_scaled_dot_products():
    reps = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    protos = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # same-class prototypes act as negatives too
    t = 0.5
    # row 0 logits [2, 2] -> -log(1/2); row 1 logits [0, 0] -> -log(1/2)
    assert float(prototype_contrast(reps, protos, t)) == pytest.approx(math.log(2))
    reps = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    row0 = -math.log(math.exp(4) / (math.exp(4) + 1))
    row1 = -math.log(math.exp(2) / (1 + math.exp(2)))
    assert float(prototype_contrast(reps, protos, t)) == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_fill_missing_puts_the_class_prototype_zeros_or_noise_only_where_missing():
    reps = {m: torch.ones(3, 2) for m in ("fmri", "image", "text")}
    present = {"image": torch.tensor([True, False, True]), "text": torch.tensor([True, True, True])}
    library = {"image": torch.tensor([[5.0, 5.0], [7.0, 8.0]]), "text": torch.zeros(2, 2)}
    out = fill_missing(reps, present, "prototype", torch.tensor([0, 1, 0]), library)
    assert torch.equal(out["image"], torch.tensor([[1.0, 1.0], [7.0, 8.0], [1.0, 1.0]]))
    assert out["text"] is reps["text"]
    zero = fill_missing(reps, present, "zero")
    assert torch.equal(zero["image"][1], torch.zeros(2))
    noise = fill_missing(reps, present, "random", generator=torch.Generator().manual_seed(0))
    assert not torch.equal(noise["image"][1], torch.ones(2)) and torch.equal(noise["image"][0], torch.ones(2))


def test_initial_library_is_seeded():
    a, b = init_prototypes(4, 3, seed=1), init_prototypes(4, 3, seed=1)
    assert all(torch.equal(a[m], b[m]) for m in a)
    assert not torch.equal(a["image"], init_prototypes(4, 3, seed=2)["image"])
