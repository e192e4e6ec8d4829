import math

import numpy as np
import pytest
import torch

from brainbench.errors import BrainbenchError, ConfigError
from brainbench.metrics.retrieval import (
    BrainImageRetrieval,
    full_set_accuracy,
    per_query_accuracy,
    retrieval_accuracy,
    retrieval_spec,
    shared_subset_accuracy,
    shared_subset_indices,
)
from brainbench.metrics.similarity import cosine_similarity_matrix


def unit_vectors(degrees):
    radians = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([torch.cos(radians), torch.sin(radians)], dim=1)


# Hand case: 2-D unit vectors, cosine order == angular-distance order.
# images at 0, 90, 180, 270 degrees; brain predictions at 10, 40, 170, 200 degrees.
# brain2image (rank images for each brain row):
#   b0 (10):  nearest image 0 (10 deg)                         -> correct
#   b1 (40):  image 0 is 40 deg away, image 1 is 50 deg       -> wrong (2nd best: image 1)
#   b2 (170): nearest image 2 (10 deg)                         -> correct
#   b3 (200): image 2 is 20 deg, image 3 is 70 deg            -> wrong (2nd best: image 3)
#   top-1 = 2/4 = 0.5, top-2 = 4/4 = 1.0
# image2brain (rank brain rows for each image):
#   i0 (0):   b0 10, b1 40, b2 170, b3 160  -> b0 correct
#   i1 (90):  b0 80, b1 50, b2 80, b3 110   -> b1 correct
#   i2 (180): b0 170, b1 140, b2 10, b3 20  -> b2 correct
#   i3 (270): b0 100, b1 130, b2 100, b3 70 -> b3 correct
#   top-1 = 4/4 = 1.0  (a direction swap would report 1.0 for brain2image)
HAND_BRAIN = unit_vectors([10.0, 40.0, 170.0, 200.0])
HAND_IMAGE = unit_vectors([0.0, 90.0, 180.0, 270.0])


def test_hand_case_directions_differ():
    sim = cosine_similarity_matrix(HAND_BRAIN, HAND_IMAGE)
    assert sim.dtype == torch.float64
    # row = brain, column = image: S[1, 0] = cos(40 deg)
    assert sim[1, 0].item() == pytest.approx(math.cos(math.radians(40)))
    assert full_set_accuracy(sim, direction="brain2image").item() == 0.5
    assert full_set_accuracy(sim, direction="image2brain").item() == 1.0
    assert full_set_accuracy(sim, direction="brain2image", top_k=2).item() == 1.0
    for variant in ("shared-subset", "per-query", "full-set"):
        kwargs = dict(variant=variant, pool=4, draws=3)
        assert retrieval_accuracy(HAND_BRAIN, HAND_IMAGE, direction="brain2image", **kwargs).item() == 0.5
        assert retrieval_accuracy(HAND_BRAIN, HAND_IMAGE, direction="image2brain", **kwargs).item() == 1.0


def test_hand_case_scale_invariant_and_flattened():
    # cosine ignores positive scaling; (N, T, D) inputs are flattened
    brain = (HAND_BRAIN * torch.tensor([[3.0], [0.1], [7.0], [2.0]], dtype=torch.float64)).reshape(4, 1, 2)
    image = HAND_IMAGE.float().reshape(4, 2, 1)
    assert retrieval_accuracy(brain, image, direction="brain2image", variant="full-set").item() == 0.5
    assert retrieval_accuracy(brain, image, direction="image2brain", variant="full-set").item() == 1.0


def noisy_pair(n=40, d=16, noise=1.5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(n, d, generator=gen)
    return target + noise * torch.randn(n, d, generator=gen), target


def test_shared_subset_with_full_pool_equals_full_set():
    pred, target = noisy_pair()
    sim = cosine_similarity_matrix(pred, target)
    for direction in ("brain2image", "image2brain"):
        for k in (1, 5):
            full = full_set_accuracy(sim, direction=direction, top_k=k)
            assert 0.0 < full.item() < 1.0
            kw = dict(direction=direction, top_k=k, pool=40, draws=5)
            assert shared_subset_accuracy(sim, **kw).item() == full.item()
            assert per_query_accuracy(sim, **kw).item() == full.item()
    assert all((idx == np.arange(40)).all() for idx in shared_subset_indices(40, pool=40, draws=3))


def test_shared_subsets_are_seeded_distinct_and_reproducible():
    a = shared_subset_indices(100, pool=30, draws=4, seed=42)
    b = shared_subset_indices(100, pool=30, draws=4, seed=42)
    expected = np.random.default_rng(42)
    for ia, ib in zip(a, b, strict=True):
        assert (ia == ib).all() and len(set(ia.tolist())) == 30
        assert (ia == expected.choice(100, size=30, replace=False)).all()
    assert not (a[0] == shared_subset_indices(100, pool=30, draws=1, seed=7)[0]).all()


def test_pool_larger_than_n_raises():
    pred, target = noisy_pair(n=20)
    with pytest.raises(ConfigError, match="pool=min\\(300, N\\)"):
        retrieval_accuracy(pred, target, direction="brain2image", variant="shared-subset")
    with pytest.raises(ConfigError, match="larger than the 20 test items"):
        retrieval_accuracy(pred, target, direction="brain2image", variant="per-query", pool=21)


def k_beaters_similarity(n, k):
    # every query i scores 0.5 for its own item and 1.0 for exactly k others (i+1..i+k mod n), 0 elsewhere;
    # by symmetry every column j is also beaten by exactly k rows (j-1..j-k mod n)
    sim = torch.zeros(n, n, dtype=torch.float64)
    idx = torch.arange(n)
    sim[idx, idx] = 0.5
    for step in range(1, k + 1):
        sim[idx, (idx + step) % n] = 1.0
    return sim


def hypergeom_correct(n, k, pool, top_k):
    # distractors: pool-1 drawn without replacement from the n-1 others, k of which beat the true item;
    # correct iff fewer than top_k beaters are drawn: sum_m<top_k C(k,m) C(n-1-k, pool-1-m) / C(n-1, pool-1)
    total = math.comb(n - 1, pool - 1)
    return sum(math.comb(k, m) * math.comb(n - 1 - k, pool - 1 - m) for m in range(top_k)) / total


@pytest.mark.parametrize("top_k", [1, 3])
def test_per_query_matches_hypergeometric(top_k):
    n, k, pool, draws = 60, 5, 20, 200
    sim = k_beaters_similarity(n, k)
    # top-1: C(54,19)/C(59,19) = (40/59)(39/58)(38/57)(37/56)(36/55) = 0.13143
    # top-3: adds m=1,2 beaters drawn: 0.81574
    expected = hypergeom_correct(n, k, pool, top_k)
    assert expected == pytest.approx({1: 0.13143, 3: 0.81574}[top_k], abs=1e-5)
    sd = math.sqrt(expected * (1 - expected) / (n * draws))
    for direction in ("brain2image", "image2brain"):
        got = per_query_accuracy(sim, direction=direction, top_k=top_k, pool=pool, draws=draws).item()
        assert abs(got - expected) < 4 * sd, (direction, got, expected)
    # the full set always holds all k beaters: top-1 is 0
    assert full_set_accuracy(sim, direction="brain2image").item() == 0.0


def test_per_query_independent_of_block_size_and_reproducible():
    sim = k_beaters_similarity(50, 4)
    kw = dict(direction="brain2image", pool=10, draws=6, seed=3)
    a = per_query_accuracy(sim, block_size=7, per_draw=True, **kw)
    b = per_query_accuracy(sim, block_size=1024, per_draw=True, **kw)
    assert torch.equal(a, b) and a.shape == (6,)
    assert not torch.equal(a, per_query_accuracy(sim, block_size=7, per_draw=True, **{**kw, "seed": 4}))


def test_ties_count_as_wrong():
    # every candidate scores the same: the true one is never strictly best, even at top-5 out of 10
    sim = torch.ones(10, 10)
    for direction in ("brain2image", "image2brain"):
        assert full_set_accuracy(sim, direction=direction, top_k=5).item() == 0.0
        assert shared_subset_accuracy(sim, direction=direction, pool=10, draws=2).item() == 0.0
        assert per_query_accuracy(sim, direction=direction, pool=5, draws=2).item() == 0.0
    # one tie with the true item (S[0,0] == S[0,1]): row 0 wrong at top-1, right at top-2
    sim = torch.eye(3)
    sim[0, 1] = 1.0
    assert full_set_accuracy(sim, direction="brain2image").item() == pytest.approx(2 / 3)
    assert full_set_accuracy(sim, direction="brain2image", top_k=2).item() == 1.0
    # constant (all-zero) predictions tie everywhere
    assert (
        retrieval_accuracy(torch.zeros(6, 4), torch.randn(6, 4), direction="brain2image", variant="full-set")
        == 0
    )


def test_perfect_predictions_score_one():
    target = torch.randn(50, 3, 8, generator=torch.Generator().manual_seed(1))
    for direction in ("brain2image", "image2brain"):
        for variant in ("shared-subset", "per-query", "full-set"):
            for k in (1, 5):
                kw = dict(direction=direction, variant=variant, top_k=k, pool=30, draws=4)
                assert retrieval_accuracy(target, target.clone(), **kw).item() == 1.0


def test_shuffled_predictions_near_chance():
    gen = torch.Generator().manual_seed(2)
    target = torch.randn(600, 32, generator=gen)
    pred = torch.randn(600, 32, generator=gen)  # independent of target
    sim = cosine_similarity_matrix(pred, target)
    for direction in ("brain2image", "image2brain"):
        # chance: 1/300 = 0.0033 and 5/300 = 0.0167 in the pool, 1/600 in the full set
        for k in (1, 5):
            kw = dict(direction=direction, top_k=k, pool=300, draws=30)
            assert abs(shared_subset_accuracy(sim, **kw).item() - k / 300) < 0.01
            assert abs(per_query_accuracy(sim, **kw).item() - k / 300) < 0.006
        assert full_set_accuracy(sim, direction=direction).item() < 0.01


def test_non_finite_and_shape_errors():
    with pytest.raises(BrainbenchError, match="NaN"):
        cosine_similarity_matrix(torch.full((3, 2), float("nan")), torch.ones(3, 2))
    with pytest.raises(ValueError, match="same N"):
        cosine_similarity_matrix(torch.ones(3, 2), torch.ones(4, 2))


def test_float32_float64_half_and_block_size_agree():
    pred, target = noisy_pair(n=70, d=24)
    ref = cosine_similarity_matrix(pred.double(), target.double(), block_size=1024)
    blocked = cosine_similarity_matrix(pred, target, block_size=16)
    assert blocked.dtype == torch.float32
    torch.testing.assert_close(blocked.double(), ref, atol=1e-6, rtol=0)
    half = cosine_similarity_matrix(pred.half(), target.half(), block_size=9)
    torch.testing.assert_close(half.double(), ref, atol=5e-3, rtol=0)


@pytest.mark.parametrize("variant", ["shared-subset", "per-query", "full-set"])
@pytest.mark.parametrize("direction", ["brain2image", "image2brain"])
def test_metric_class_equals_functional_and_chunked_updates(variant, direction):
    pred, target = noisy_pair(n=45, d=6, noise=1.0, seed=5)
    kw = dict(direction=direction, variant=variant, top_k=1, pool=30, draws=5, seed=11)
    expected = retrieval_accuracy(pred, target, **kw)
    one = BrainImageRetrieval(network="world-clip-v1.clip_image", **kw)
    one.update(pred, target)
    two = BrainImageRetrieval(network="world-clip-v1.clip_image", **kw)
    two.update(pred[:17], target[:17])
    two.update(pred[17:], target[17:])
    assert one.compute().item() == expected.item() == two.compute().item()
    assert BrainImageRetrieval.higher_is_better is True
    tag = {"brain2image": "b2i", "image2brain": "i2b"}[direction]
    suffix = {"shared-subset": "subset30", "per-query": "perquery30", "full-set": "full"}[variant]
    assert one.spec.id == f"retrieval_{tag}_top1_{suffix}/world-clip-v1.clip_image@v1"


def test_spec_records_pool_and_direction():
    spec = retrieval_spec(
        direction="image2brain", variant="per-query", top_k=5, network="ViT-L-14:openai", pool=300
    )
    assert spec.id == "retrieval_i2b_top5_perquery300/ViT-L-14:openai@v1"
    assert spec.params["pool"] == 300 and spec.params["direction"] == "image2brain"
    assert spec.higher_is_better
