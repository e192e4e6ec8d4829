"""Lite-Mind: shapes, the released parameter count, FreMLP's diagonals, the one-way loss and save/load.

Reference numbers: shared/reference/methods.md §1 (released config: 15,652,991 parameters without the unused
FreMLP ``embeddings`` vectors, 34 patches, stages 5,329,920 / 6,771,200 / 349,440 / 2,729,340).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from brainbench.errors import ConfigError
from brainbench.methods.litemind import FreMLP, GlobalFilter, LiteMind

TINY = {
    "n_voxels": 340,
    "target_shapes": {"clip_tokens": (5, 16)},
    "stage_widths": (16, 8),
    "depths": (1, 1, 1),
    "max_epochs": 1,
}


def tiny_model(**overrides):
    torch.manual_seed(0)
    return LiteMind(**(TINY | overrides))


def test_forward_shapes():
    model = tiny_model().eval()
    assert model.patch_size == 340 // 34 == 10 and model.n_patches == 34
    out = model(torch.randn(3, 340))
    assert set(out) == {"clip_tokens"}
    assert out["clip_tokens"].shape == (3, 5, 16)
    assert torch.isfinite(out["clip_tokens"]).all()


def test_patch_count_formula():
    model = tiny_model(n_voxels=1003, patch_size=100)
    assert model.n_patches == (1003 - 100) // 100 + 1 == 10
    assert model(torch.randn(2, 1003))["clip_tokens"].shape == (2, 5, 16)


def test_released_config_parameter_count():
    model = LiteMind(n_voxels=15724, target_shapes={"clip_tokens": (257, 768)}, patch_size=450)
    assert model.n_patches == 34
    assert model.n_parameters() == 15_652_991
    stage_counts = [sum(p.numel() for p in stage.parameters()) for stage in model.stages]
    assert stage_counts == [5_329_920, 6_771_200, 349_440, 2_729_340]
    assert [len(stage) for stage in model.stages] == [2, 10, 2, 4]
    assert model.head.in_features == 34 and model.head.out_features == 768


def test_depths_must_match_stages():
    with pytest.raises(ValueError, match="one entry per stage width"):
        tiny_model(depths=(1, 1))


def test_missing_target_shape():
    with pytest.raises(ConfigError, match="clip_tokens"):
        LiteMind(n_voxels=340, target_shapes={"clip_image": (16,)}, stage_widths=(16, 8), depths=(1, 1, 1))


def test_fremlp_reads_only_the_diagonals():
    torch.manual_seed(0)
    layer = FreMLP(dim=6)
    x = torch.randn(2, 10, 6)
    before = layer(x)
    with torch.no_grad():
        layer.r[0, 3] += 5.0
        layer.i[4, 1] -= 5.0
    torch.testing.assert_close(layer(x), before)
    with torch.no_grad():
        layer.r[2, 2] += 5.0
    assert not torch.allclose(layer(x), before)


def test_global_filter_is_cubic_in_the_input():
    torch.manual_seed(0)
    layer = GlobalFilter(dim=4, n_tokens=10)
    x = torch.randn(2, 10, 4)
    torch.testing.assert_close(layer(2 * x), 8 * layer(x), atol=1e-5, rtol=1e-4)
    assert layer.weight.shape == (2, 10 // 2 + 1, 4, 2)


def test_loss_is_one_directional_rows_are_targets():
    model = tiny_model()
    torch.manual_seed(1)
    pred, target = torch.randn(4, 5, 16), torch.randn(4, 5, 16)
    logits = math.exp(8) * F.normalize(target.flatten(1), dim=-1) @ F.normalize(pred.flatten(1), dim=-1).T
    expected = F.cross_entropy(logits, torch.arange(4))
    torch.testing.assert_close(model.contrastive_loss(pred, target), expected)
    transposed = F.cross_entropy(logits.T, torch.arange(4))
    assert not torch.isclose(expected, transposed)  # the direction matters for these inputs
    torch.testing.assert_close(model.contrastive_loss(target, pred), transposed)


def test_loss_decreases_on_a_fixed_batch():
    model = tiny_model(dropout=0.0, drop_path=0.0, logit_scale=10.0)
    torch.manual_seed(2)
    voxels, targets = torch.randn(8, 340), torch.randn(8, 5, 16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = model.contrastive_loss(model(voxels)["clip_tokens"], targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_save_load_round_trip(tmp_path):
    model = tiny_model().eval()
    voxels = torch.randn(3, 340)
    model.save_pretrained(tmp_path / "model")
    loaded = LiteMind.load_pretrained(tmp_path / "model", n_voxels=340)
    assert isinstance(loaded, LiteMind) and not loaded.training
    assert loaded.hparams.stage_widths == (16, 8) or list(loaded.hparams.stage_widths) == [16, 8]
    torch.testing.assert_close(loaded(voxels)["clip_tokens"], model(voxels)["clip_tokens"], rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"trained on 340 voxels but the data has 400"):
        LiteMind.load_pretrained(tmp_path / "model", n_voxels=400)


def test_check_voxels():
    model = tiny_model()
    model.check_voxels(torch.zeros(2, 340))
    with pytest.raises(ConfigError, match=r"built for 340 voxels but the data has 339"):
        model.check_voxels(torch.zeros(2, 339))
    with pytest.raises(ConfigError, match="340 voxels"):
        model.predict_step({"voxels": torch.zeros(2, 300), "stim_id": torch.arange(2)}, 0)


def test_predict_step_returns_stim_ids():
    model = tiny_model().eval()
    out = model.predict_step({"voxels": torch.randn(2, 340), "stim_id": torch.tensor([7, 3])}, 0)
    assert out["stim_id"].tolist() == [7, 3]
    assert out["clip_tokens"].shape == (2, 5, 16) and out["clip_tokens"].dtype == torch.float32
