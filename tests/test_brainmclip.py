"""BrainMCLIP: ROI split, targets, shapes, loss terms (cross-reconstruction wiring), save/load, e2e.

The ROI split and the cross-reconstruction terms are checked against index sets and values written out by
hand, and the gradient test checks that each cross term reaches exactly the encoder and decoder that the
paper's ``F_hat_{S,C} = D_D(b_S)`` (and vice versa) names, not merely "some" parameters.
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from bench_helpers import tiny_config, tiny_request

from brainbench.errors import ConfigError
from brainbench.methods import load_method_config
from brainbench.methods.brainmclip import BrainMCLIP, nce, select_rois

# 12 voxels: early visual 0-4 (V1v and V2v share voxel 2), floc 8-10 (FFA-1 and PPA share 9), nsdgeneral 0-10;
# voxel 11 lies outside every visual ROI.
ROIS = {
    "prf-visualrois/V1v": [0, 1, 2],
    "prf-visualrois/V2v": [2, 3, 4],
    "floc-faces/FFA-1": [8, 9],
    "floc-places/PPA": [9, 10],
    "nsdgeneral/nsdgeneral": list(range(11)),
}
SHAPES = {"clip_tokens": (3, 8), "clip_image": (8,), "layer:2": (3, 6), "layer:3": (3, 6), "layer:4": (3, 6)}
TINY = {
    "n_voxels": 12,
    "target_shapes": SHAPES,
    "rois": ROIS,
    "detail_layers": (2, 3),
    "hidden": 16,
    "code_dim": 8,
    "token_rank": 4,
    "decoder_rank": 2,
    "decoder_hidden": 8,
}


def tiny_model(**overrides):
    torch.manual_seed(0)
    return BrainMCLIP(**(TINY | overrides))


def tiny_batch(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    batch = {name: torch.randn(n, *shape, generator=g) for name, shape in SHAPES.items()}
    batch["clip_image"] = batch["clip_tokens"][:, 0].clone()  # as for a ViT with pool_type "tok"
    batch["voxels"] = torch.randn(n, 12, generator=g)
    batch["stim_id"] = torch.arange(n)
    return batch


def test_roi_split_hand_case():
    assert select_rois(ROIS, ["prf-visualrois/*"], "detail_rois").tolist() == [0, 1, 2, 3, 4]
    assert select_rois(ROIS, ["floc-*/*"], "semantic_rois").tolist() == [8, 9, 10]
    assert select_rois(ROIS, ["floc-faces/*", "prf-visualrois/V1v"], "x").tolist() == [0, 1, 2, 8, 9]
    model = tiny_model()  # defaults: detail = nsdgeneral/*, semantic = floc-*/*
    assert model.detail_idx.tolist() == list(range(11)) and model.semantic_idx.tolist() == [8, 9, 10]
    assert model.shared_in_detail.tolist() == [8, 9, 10] and model.shared_in_semantic.tolist() == [0, 1, 2]
    voxels = torch.arange(24.0).view(2, 12)
    f_detail, f_semantic = model.split(voxels)
    torch.testing.assert_close(f_detail, voxels[:, :11])
    torch.testing.assert_close(f_semantic, voxels[:, [8, 9, 10]])
    low = tiny_model(detail_rois=("prf-visualrois/*", "floc-places/*"))
    assert low.detail_idx.tolist() == [0, 1, 2, 3, 4, 9, 10] and low.shared_in_semantic.tolist() == [1, 2]
    assert low.encoder_detail.stem[0].in_features == 7 and low.decoder_detail.mlp[-1].out_features == 7


def test_clear_errors_for_rois():
    with pytest.raises(ConfigError, match=r"'floc-food/\*' matches no ROI .*available: floc-faces/FFA-1"):
        tiny_model(semantic_rois=("floc-food/*",))
    with pytest.raises(ConfigError, match="needs `rois`"):
        tiny_model(rois=None)
    with pytest.raises(ConfigError, match="share none"):
        tiny_model(detail_rois=("prf-visualrois/*",))
    assert tiny_model(detail_rois=("prf-visualrois/*",), w_cross=0.0).detail_idx.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match="outside the 12 voxels"):
        tiny_model(rois=ROIS | {"floc-words/VWFA-1": [12]})
    with pytest.raises(ConfigError, match=r"need targets \['layer:7'\]"):
        tiny_model(detail_layers=(2, 7))


def test_forward_shapes_and_pooling():
    model = tiny_model().eval()
    out = model(torch.randn(5, 12))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "clip_tokens": (5, 3, 8),
        "clip_image": (5, 8),
        "detail": (5, 3, 6),
    }
    torch.testing.assert_close(out["clip_image"], out["clip_tokens"][:, 0])
    mean_pooled = tiny_model(pool="mean").eval()(torch.randn(5, 12))
    torch.testing.assert_close(mean_pooled["clip_image"], mean_pooled["clip_tokens"].mean(1))
    # the voxel outside both ROIs (11) is never read
    voxels = torch.randn(5, 12)
    changed = voxels.clone()
    changed[:, 11] += 100.0
    torch.testing.assert_close(model(voxels)["detail"], model(changed)["detail"])


def test_detail_target_is_the_mean_of_the_chosen_layers():
    batch = tiny_batch()
    torch.testing.assert_close(tiny_model().detail_target(batch), (batch["layer:2"] + batch["layer:3"]) / 2)
    torch.testing.assert_close(tiny_model(detail_layers=(4,)).detail_target(batch), batch["layer:4"])


def test_loss_terms_by_hand_and_weights():
    model = tiny_model(dropout=0.0).eval()
    batch = tiny_batch()
    terms = model.loss_terms(batch)[0]
    b_detail, b_semantic = model.codes(batch["voxels"])
    voxels = batch["voxels"]
    # F_hat_{S,C} = D_D(b_S) against F_S, on the floc voxels 8-10 (positions 8-10 of the detail decoder)
    cross_semantic = F.mse_loss(model.decoder_detail(b_semantic)[:, 8:11], voxels[:, 8:11])
    cross_detail = F.mse_loss(model.decoder_semantic(b_detail), voxels[:, 8:11])
    torch.testing.assert_close(terms["cross_semantic"], cross_semantic)
    torch.testing.assert_close(terms["cross_detail"], cross_detail)
    torch.testing.assert_close(
        terms["recon_detail"], F.mse_loss(model.decoder_detail(b_detail), voxels[:, :11])
    )
    y_semantic = model.head_semantic(b_semantic)
    torch.testing.assert_close(terms["coarse_semantic"], nce(y_semantic[:, 0], batch["clip_image"], 0.05))
    detail_target = (batch["layer:2"] + batch["layer:3"]) / 2
    torch.testing.assert_close(terms["mse_detail"], F.mse_loss(model.head_detail(b_detail), detail_target))
    weights = {"w_nce": 0.5, "w_mse": 2.0, "w_coarse": 3.0, "w_recon": 5.0, "w_cross": 7.0}
    weighted = tiny_model(dropout=0.0, **weights).eval().loss_terms(batch)[0]
    expected = sum(
        weights[f"w_{group}"] * (weighted[f"{group}_detail"] + weighted[f"{group}_semantic"])
        for group in ("nce", "mse", "coarse", "recon", "cross")
    )
    torch.testing.assert_close(weighted["loss"], expected)


def _grad_norms(model):
    return {
        name: sum(float(p.grad.abs().sum()) for p in getattr(model, name).parameters() if p.grad is not None)
        for name in ("encoder_detail", "encoder_semantic", "decoder_detail", "decoder_semantic")
    }


@pytest.mark.parametrize(
    ("term", "reached", "untouched"),
    [
        ("cross_semantic", {"encoder_semantic", "decoder_detail"}, {"encoder_detail", "decoder_semantic"}),
        ("cross_detail", {"encoder_detail", "decoder_semantic"}, {"encoder_semantic", "decoder_detail"}),
    ],
)
def test_cross_reconstruction_is_nonzero_and_crosses_the_branches(term, reached, untouched):
    model = tiny_model(dropout=0.0)
    terms = model.loss_terms(tiny_batch())[0]
    assert terms[term].item() > 1e-3
    terms[term].backward()
    norms = _grad_norms(model)
    assert all(norms[name] > 0 for name in reached), norms
    assert all(norms[name] == 0 for name in untouched), norms


def test_loss_decreases_on_a_fixed_batch():
    model = tiny_model(dropout=0.0)
    batch = tiny_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(60):
        terms = model.loss_terms(batch)[0]
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        history.append({k: v.item() for k, v in terms.items()})
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    for name in ("nce_semantic", "nce_detail", "cross_semantic", "cross_detail"):
        assert history[-1][name] < history[0][name], name


def test_save_load_round_trip_keeps_rois(tmp_path):
    model = tiny_model(detail_rois=("prf-visualrois/*", "floc-*/*")).eval()
    voxels = torch.randn(3, 12)
    model.save_pretrained(tmp_path / "model")
    loaded = BrainMCLIP.load_pretrained(tmp_path / "model", n_voxels=12)
    assert isinstance(loaded, BrainMCLIP) and not loaded.training
    assert loaded.hparams.rois == ROIS and tuple(loaded.hparams.detail_rois) == (
        "prf-visualrois/*",
        "floc-*/*",
    )
    assert torch.equal(loaded.detail_idx, model.detail_idx) and torch.equal(
        loaded.semantic_idx, model.semantic_idx
    )
    for name, value in model(voxels).items():
        torch.testing.assert_close(loaded(voxels)[name], value, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="trained on 12 voxels but the data has 13"):
        BrainMCLIP.load_pretrained(tmp_path / "model", n_voxels=13)


def test_configs_build_at_their_scale():
    world = load_method_config("brainmclip", "world")
    final = load_method_config("brainmclip", "world-final-only")
    assert world["model"]["init_args"]["detail_layers"] == [2, 3]
    assert final["model"]["init_args"]["detail_layers"] == [4]
    assert "layer:4" in final["data"]["targets"] and "layer:2" not in final["data"]["targets"]
    different = {
        k
        for k in world["model"]["init_args"]
        if world["model"]["init_args"][k] != final["model"]["init_args"][k]
    }
    assert different == {"detail_layers"}  # the ablation changes the Detail target and nothing else
    nsd = load_method_config("brainmclip", "nsd")["model"]["init_args"]
    assert nsd["detail_layers"] == list(range(11, 21))  # the paper's layers 11-20 of ViT-L/14
    shapes = {"clip_tokens": (257, 768), "clip_image": (768,)} | {
        f"layer:{k}": (257, 1024) for k in range(11, 21)
    }
    rois = {"nsdgeneral/nsdgeneral": list(range(15724)), "floc-faces/FFA-1": list(range(1000, 2700))}
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in nsd.items()}
    with torch.device("meta"):
        model = BrainMCLIP(15724, shapes, rois=rois, **args)
    h, r, c = args["hidden"], args["token_rank"], args["code_dim"]
    stem = 15724 * h + h + 2 * h
    assert model.encoder_detail.stem[0].weight.shape == (h, 15724)
    assert sum(p.numel() for p in model.encoder_detail.stem.parameters()) == stem
    assert model.encoder_detail.to_tokens.weight.shape == (257 * r, h)
    assert model.head_detail[-1].weight.shape == (1024, c) and model.head_semantic[-1].weight.shape == (
        768,
        c,
    )


@pytest.mark.slow
def test_tiny_world_end_to_end(tmp_path: Path) -> None:
    """Tiny world through ``run_bench``: ROIs reach the method, it trains, predicts and saves with them."""
    from brainbench.bench import run_bench

    init_args = {"hidden": 32, "code_dim": 16, "token_rank": 4}
    data = {"batch_size": 32, "shuffle_buffer": 500}
    config = tiny_config(tmp_path, "brainmclip", epochs=3, init_args=init_args, data=data)
    request = tiny_request(tmp_path, "brainmclip", config=config)
    row, result = run_bench(request)
    b2i = "retrieval_b2i_top1_subset60/world-clip:v1.clip_tokens@v1"
    assert 0 <= row[b2i] <= 1
    loaded = BrainMCLIP.load_pretrained(tmp_path / "runs" / row["run_id"] / "model")
    assert any(name.startswith("floc-") for name in loaded.hparams.rois)
    assert len(loaded.semantic_idx) < len(loaded.detail_idx)
