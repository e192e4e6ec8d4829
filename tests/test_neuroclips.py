"""NeuroClips: shapes, the paper's parameter table, η, losses, the pivot, save/load, the configs.

Reference numbers: shared/reference/methods.md §2 (parameter table for subject 1, V = 13447: SR ridge 55.1M,
mixer 134.3M, backbone_linear 1745.3M for 256 x 1664 tokens, clip_proj 8.3M; PR ridge1 55.1M, Inception
Extension 24.2M, mixer 134.3M, blin1 12.8M).
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from brainbench.describe import scale_shapes
from brainbench.errors import ConfigError
from brainbench.generators import generator_inputs
from brainbench.generators.video import TemporalAttention
from brainbench.methods import build_method, load_method_config
from brainbench.methods.mindeye import mixco, mixco_nce
from brainbench.methods.neuroclips import NeuroClips, fit_ridge_pivot

SHAPES = {
    "clip_tokens": (5, 8),
    "clip_image": (8,),
    "clip_text": (8,),
    "frames:16": (3, 3, 16, 16),
}
TINY = {
    "n_voxels": 40,
    "target_shapes": SHAPES,
    "frames_target": "frames:16",
    "autoencoder": None,
    "hidden": 16,
    "pr_hidden": 16,
    "extension_dim": 8,
    "base_channels": 8,
    "decoder_widths": (8, 8),
    "heads": 1,
}


def tiny_model(**overrides):
    torch.manual_seed(0)
    return NeuroClips(**(TINY | overrides))


def test_forward_shapes_and_predictions():
    model = tiny_model().eval()
    out = model(torch.randn(3, 40))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "clip_tokens": (3, 5, 8),
        "clip_image": (3, 8),
        "clip_text": (3, 8),
        "keyframe_tokens": (3, 5, 8),  # the backbone output, regressed onto the tokens (prior stand-in)
        "frame_latents": (3, 3, 4, 2, 2),  # (F, C, 16 / 8, 16 / 8) of the stand-in autoencoder
    }
    torch.testing.assert_close(out["clip_image"], out["clip_tokens"][:, 0])
    torch.testing.assert_close(out["clip_text"].norm(dim=-1), torch.ones(3))
    assert model.predicted_names() == ("clip_tokens", "clip_image", "clip_text")
    semantics_only = tiny_model(perception=False).eval()
    assert "frame_latents" not in semantics_only(torch.randn(2, 40))


def test_missing_targets_and_bad_options_fail_clearly():
    with pytest.raises(ConfigError, match=r"needs the target 'frames:16'"):
        tiny_model(target_shapes={"clip_tokens": (5, 8)}, frames_target="frames:16")
    with pytest.raises(ConfigError, match=r"pivot must be 'fit' or 'identity'"):
        tiny_model(pivot="learned")
    with pytest.raises(ConfigError, match=r"cannot reach a 2-side latent"):
        tiny_model(decoder_widths=(8, 8, 8))


def test_temporal_attention_eta_mixes_identity_and_attention():
    torch.manual_seed(1)
    layer = TemporalAttention(8, n_frames=6, heads=2).eval()
    x = torch.randn(2, 6, 8, 3, 3)
    with torch.no_grad():
        layer.eta.fill_(1.0)
        torch.testing.assert_close(layer(x), x, rtol=0, atol=0)  # η = 1: E unchanged
        layer.eta.fill_(0.0)
        attended = layer(x)
        layer.eta.fill_(0.3)
        mixed = layer(x)
        layer.eta.fill_(7.0)  # clamped to 1
        clamped = layer(x)
    assert not torch.allclose(attended, x)
    torch.testing.assert_close(mixed, 0.3 * x + 0.7 * attended)
    torch.testing.assert_close(clamped, x)


def test_frames_are_independent_when_every_eta_is_one():
    """Frames mix only through temporal attention: with η = 1 a frame's latent ignores the others."""
    model = tiny_model(dropout=0.0).eval()
    with torch.no_grad():
        for block in model.perception_net.decoder.blocks:
            block["temporal"].eta.fill_(1.0)
    h = torch.randn(2 * 3, 8, 1, 1)
    edited = h.clone()
    edited[1] += 1.0  # change frame 1 of clip 0
    out, out_edited = (model.perception_net.decoder(x, 3) for x in (h, edited))
    assert torch.equal(out[:, [0, 2]], out_edited[:, [0, 2]]) and torch.equal(out[1], out_edited[1])
    assert not torch.allclose(out[0, 1], out_edited[0, 1])


def test_real_scale_parameter_counts_match_the_paper_table():
    config = load_method_config("neuroclips", "cc2017")
    info = scale_shapes(config)
    assert info["n_voxels"] == 13447 and info["target_shapes"]["layer:48"] == (257, 1664)
    with torch.device("meta"):
        model = build_method(config, info["n_voxels"], info["target_shapes"])

    def millions(module):
        return round(sum(p.numel() for p in module.parameters()) / 1e6, 1)

    sr, pr = model.semantic, model.perception_net
    assert (millions(sr.ridge), millions(sr.blocks), millions(sr.clip_proj)) == (55.1, 134.3, 8.3)
    # 257 tokens (CLS included) instead of the paper's 256 patch tokens: 4097 * 1664 more than 1745.3M
    assert sum(p.numel() for p in sr.backbone_linear.parameters()) == 4097 * 257 * 1664
    assert (millions(pr.ridge1), millions(pr.blocks), millions(pr.blin1)) == (55.1, 134.3, 12.8)
    assert 24.2 <= millions(pr.extension) <= 24.4
    assert pr.base == 7 and model.autoencoder.latent_shape == (4, 28, 28)  # SD's 4 x 28 x 28 at 224 px


def test_ridge_pivot_recovers_a_linear_map():
    torch.manual_seed(2)
    x = torch.randn(400, 6, dtype=torch.float64)
    w_true = torch.randn(6, 4, dtype=torch.float64)
    w = fit_ridge_pivot(x, x @ w_true, ridge=1e-8)
    torch.testing.assert_close(w, w_true, atol=1e-5, rtol=1e-5)
    shrunk = fit_ridge_pivot(x, x @ w_true, ridge=10.0)
    assert shrunk.norm() < 0.5 * w_true.norm()  # the penalty shrinks


def test_text_and_prior_terms_use_the_same_mixing():
    model = tiny_model(dropout=0.0, blur_scale=0.0).train()
    torch.manual_seed(3)
    batch = {
        "voxels": torch.randn(6, 40),
        "clip_tokens": torch.randn(6, 5, 8),
        "clip_text": torch.randn(6, 8),
        "frames:16": torch.rand(6, 3, 3, 16, 16),
    }
    torch.manual_seed(4)
    out = model.losses(batch, mix=True)
    torch.manual_seed(4)
    mixed, perm, lam = mixco(batch["voxels"], 0.15, 0.5)
    _, tokens = model.semantic(mixed)
    text = F.normalize(tokens.mean(1) @ model.text_pivot, dim=-1)
    expected = mixco_nce(text, F.normalize(batch["clip_text"], dim=-1), 0.1, perm, lam)
    torch.testing.assert_close(out["text"], expected)
    backbone, _ = model.semantic(mixed)
    mixed_target = (
        lam[:, None, None] * batch["clip_tokens"] + (1 - lam[:, None, None]) * batch["clip_tokens"][perm]
    )
    prior = ((backbone - mixed_target) ** 2).mean() / mixed_target.var()
    torch.testing.assert_close(out["prior"], prior)
    weighted = (
        out["bimixco"] + 3.0 * prior + 0.25 * out["text"] + 0.0 * (out["blur_l1"] + 0.1 * out["blur_cont"])
    )
    torch.testing.assert_close(out["total"], weighted)


@pytest.mark.parametrize("mix", [True, False])
def test_loss_decreases_on_a_fixed_batch(mix):
    model = tiny_model(dropout=0.0)
    torch.manual_seed(5)
    batch = {
        "voxels": torch.randn(8, 40),
        "clip_tokens": torch.randn(8, 5, 8),
        "clip_text": torch.randn(8, 8),
        "frames:16": torch.rand(8, 3, 3, 16, 16),
    }
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    first = {}
    for step in range(40):
        torch.manual_seed(7)  # the same mixing every step
        out = model.losses(batch, mix=mix)
        if step == 0:
            first = {k: v.item() for k, v in out.items() if v.ndim == 0}
        optimizer.zero_grad()
        out["total"].backward()
        optimizer.step()
    assert out["total"].item() < 0.6 * first["total"]
    assert out["blur_l1"].item() < first["blur_l1"]  # the perception pathway learns too


def test_autoencoder_is_frozen_and_not_optimised():
    model = tiny_model()
    assert not any(p.requires_grad for p in model.autoencoder.parameters())
    assert all(p.requires_grad for p in model.perception_net.parameters())


def test_save_load_round_trip(tmp_path):
    model = tiny_model().eval()
    with torch.no_grad():
        model.text_pivot.mul_(2.0)  # a fitted pivot is a buffer: it must survive the round trip
    voxels = torch.randn(3, 40)
    model.save_pretrained(tmp_path / "model")
    loaded = NeuroClips.load_pretrained(tmp_path / "model", n_voxels=40)
    for key, value in model(voxels).items():
        torch.testing.assert_close(loaded(voxels)[key], value, rtol=0, atol=0)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "best.ckpt")  # what bench reloads
    state = torch.load(tmp_path / "best.ckpt", weights_only=True)["state_dict"]
    fresh = tiny_model(hidden=16)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.eval()(voxels)["frame_latents"], model(voxels)["frame_latents"])


def _strip(config):
    config = copy.deepcopy(config)
    config.pop("path")
    return config


def test_world_configs_predict_what_the_generator_reads():
    config = load_method_config("neuroclips", "world")
    assert config["dataset"] == "world-cc2017"
    init = config["model"]["init_args"]
    targets = config["data"]["targets"]
    assert {init["token_target"], init["frames_target"], "clip_text"} <= set(targets)
    assert init["mixup_pct"] == 1.0 and init["mixco_temp"] == 0.006 and init["text_weight"] == 0.25
    predictions = {init["token_target"], "clip_image", "clip_text", "keyframe_tokens", "frame_latents"}
    assert set(generator_inputs(config["generator"]).values()) <= predictions
    assert config["generator"]["kind"] == "world-video" and config["generator"]["options"]["strength"] == 0.3


@pytest.mark.parametrize(
    ("name", "option"), [("world-no-keyframe", "use_keyframe"), ("world-no-blurry", "use_blurry")]
)
def test_ablation_configs_differ_only_in_what_they_claim(name, option):
    full, ablation = (_strip(load_method_config("neuroclips", n)) for n in ("world", name))
    assert full["generator"]["options"][option] is True
    assert ablation["generator"]["options"][option] is False
    ablation["generator"]["options"][option] = True
    assert ablation == full
    header = open(load_method_config("neuroclips", name)["path"]).read().split("\n")[:3]
    assert any(f"{option}: false" in line for line in header)  # the header says what is ablated
