import numpy as np
import pytest
import torch

from brainbench.metrics.identification import (
    TwoWayIdentification,
    two_way_identification,
    two_way_identification_per_item,
)


def naive_two_way(pred, target):
    # the reference recipe (metrics.md 1.2): R = corrcoef([GT; PRED]), keep the GT x PRED block,
    # then for each prediction j count GT i != j with R[i, j] < R[j, j], divide by N-1, mean over j
    n = target.shape[0]
    r = np.corrcoef(np.concatenate([target.reshape(n, -1), pred.reshape(n, -1)]))[:n, n:]
    scores = []
    for j in range(n):
        wins = sum(r[i, j] < r[j, j] for i in range(n) if i != j)
        scores.append(wins / (n - 1))
    return float(np.mean(scores)), np.array(scores)


@pytest.mark.parametrize(
    "shape,noise,block_size", [((12, 30), 4.0, 5), ((25, 4, 7), 3.0, 1024), ((9, 50), 6.0, 1)]
)
def test_matches_naive_numpy(shape, noise, block_size):
    rng = np.random.default_rng(0)
    target = rng.standard_normal(shape)
    pred = target + noise * rng.standard_normal(shape) + 5.0  # offset: Pearson must centre rows
    expected_mean, expected_items = naive_two_way(pred, target)
    got_items = two_way_identification_per_item(
        torch.from_numpy(pred), torch.from_numpy(target), block_size=block_size
    )
    np.testing.assert_allclose(got_items.numpy(), expected_items, atol=1e-6)
    got = two_way_identification(
        torch.from_numpy(pred).float(), torch.from_numpy(target).float(), block_size=block_size
    )
    assert got.item() == pytest.approx(expected_mean, abs=1e-6)
    assert 0.0 < expected_mean < 1.0


def test_hand_case():
    # GT rows (already zero-mean): g0 = [1,-1,0], g1 = [0,1,-1], g2 = [-1,0,1];
    # Pearson(gi, gk) = -0.5 for i != k.
    # PRED: p0 = g0 (r with g0 1, others -0.5 -> wins 2/2),
    #       p1 = g0 (r with own g1 -0.5; g0 1.0 beats it, g2 -0.5 ties -> strict <: wins 0/2),
    #       p2 = g2 + 0.5*g0 = [-0.5,-0.5,1] (r with g2 0.866, g0 0, g1 -0.866 -> wins 2/2)
    # mean = (1 + 0 + 1) / 3 = 2/3
    g = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)
    pred = torch.stack([g[0], g[0], g[2] + 0.5 * g[0]])
    assert two_way_identification_per_item(pred, g).tolist() == [1.0, 0.0, 1.0]
    assert two_way_identification(pred, g).item() == pytest.approx(2 / 3)


def test_perfect_is_one_and_anticorrelated_is_zero():
    target = torch.randn(30, 20, generator=torch.Generator().manual_seed(1))
    assert two_way_identification(target.clone(), target).item() == 1.0
    # R[j, j] = -1 is the minimum possible correlation, so no other GT correlates less
    assert two_way_identification(-target, target).item() == 0.0


def test_independent_is_near_chance():
    gen = torch.Generator().manual_seed(3)
    value = two_way_identification(torch.randn(300, 64, generator=gen), torch.randn(300, 64, generator=gen))
    assert abs(value.item() - 0.5) < 0.03


def test_needs_two_items():
    with pytest.raises(ValueError, match="N >= 2"):
        two_way_identification(torch.ones(1, 3), torch.ones(1, 3))


def test_metric_class_equals_functional_in_chunks():
    gen = torch.Generator().manual_seed(4)
    target = torch.randn(40, 3, 5, generator=gen)
    pred = target + torch.randn(40, 3, 5, generator=gen)
    expected = two_way_identification(pred, target)
    metric = TwoWayIdentification(network="world-clip-v1.clip_tokens")
    metric.update(pred[:13], target[:13])
    metric.update(pred[13:], target[13:])
    assert metric.compute().item() == expected.item()
    assert metric.spec.id == "identification_2way/world-clip-v1.clip_tokens@v1"
    assert TwoWayIdentification.higher_is_better is True


def test_wide_features_get_fewer_rows_per_block(monkeypatch):
    """Memory stays bounded: a block holds at most BLOCK_BYTES of features, whatever block_size asks."""
    from brainbench.metrics import similarity

    monkeypatch.setattr(similarity, "BLOCK_BYTES", 3 * 50 * 4)  # three float32 rows of 50 features
    rows, cols = torch.randn(10, 50), torch.randn(10, 50)
    starts = [start for start, _ in similarity.similarity_blocks(rows, cols, centre=True, block_size=1024)]
    assert starts == [0, 3, 6, 9]
    full = torch.cat([b for _, b in similarity.similarity_blocks(rows, cols, centre=True)])
    expected = torch.corrcoef(torch.cat([rows, cols]))[:10, 10:]
    torch.testing.assert_close(full, expected, atol=1e-5, rtol=1e-5)
