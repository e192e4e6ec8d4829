"""NeuroClips: shapes, the paper's parameter table, η, losses, the pivot, save/load, the configs.

Reference numbers: shared/reference/methods.md §2 (parameter table for subject 1, V = 13447: SR ridge 55.1M,
mixer 134.3M, backbone_linear 1745.3M for 256 x 1664 tokens, clip_proj 8.3M; PR ridge1 55.1M, Inception
Extension 24.2M, mixer 134.3M, blin1 12.8M).
"""

import copy
import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brainbench.backbones.frame_autoencoder import TemporalAttention
from brainbench.backbones.sd_vae import SDVAEFrames
from brainbench.describe import scale_shapes
from brainbench.errors import ConfigError, MissingFileError
from brainbench.generators import build_generator, generator_inputs
from brainbench.generators.animatediff import AnimateDiffSparseCtrlGenerator
from brainbench.generators.base import GenerationContext
from brainbench.generators.diffusers_backends import LatentDiffusionGenerator
from brainbench.methods import build_method, load_method_config
from brainbench.methods.losses import mixco, mixco_nce
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
    # the SD VAE (its weights absent here: the kl-f8 architecture, counted on the meta device)
    assert isinstance(model.autoencoder, SDVAEFrames) and model.autoencoder.scaling_factor == 0.18215
    assert sum(p.numel() for p in model.autoencoder.parameters()) == 83_653_863


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


# -- the SD VAE as the frozen frame autoencoder (real scale), and the AnimateDiff generator it feeds ---------
SD_VAE_SCALING = 0.3  # not SD's 0.18215: the wrapper must read it from the VAE's config


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    """A tiny kl-f8 AutoencoderKL (4 blocks: 16 px -> 2 x 2), saved as a diffusers folder."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, sample_size=16,
        scaling_factor=SD_VAE_SCALING,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("sd-vae")
    vae.save_pretrained(folder)
    return folder


def _video_batch(n=4, seed=5):
    g = torch.Generator().manual_seed(seed)
    return {
        "voxels": torch.randn(n, 40, generator=g),
        "clip_tokens": torch.randn(n, 5, 8, generator=g),
        "clip_text": torch.randn(n, 8, generator=g),
        "frames:16": torch.rand(n, 3, 3, 16, 16, generator=g),
    }


def test_sd_vae_latents_are_its_scaled_posterior_means(vae_dir):
    from diffusers import AutoencoderKL

    model = tiny_model(autoencoder=f"sd-vae:{vae_dir}")
    assert isinstance(model.autoencoder, SDVAEFrames) and model.autoencoder.latent_shape == (4, 2, 2)
    model.autoencoder.chunk = 4  # 6 frames in two encoder calls
    frames = torch.rand(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    latents = model.encode_frames(frames)
    reference = AutoencoderKL.from_pretrained(vae_dir)
    with torch.no_grad():
        expected = reference.encode(frames.flatten(0, 1) * 2 - 1).latent_dist.mode() * SD_VAE_SCALING
        decoded = (reference.decode(expected / SD_VAE_SCALING).sample / 2 + 0.5).clamp(0, 1)
    assert latents.shape == (2, 3, 4, 2, 2)
    torch.testing.assert_close(latents, expected.unflatten(0, (2, 3)))
    with torch.no_grad():
        torch.testing.assert_close(model.autoencoder.decode(expected), decoded)
    # the perception reconstructor predicts latents of that shape
    assert model(torch.randn(2, 40))["frame_latents"].shape == (2, 3, 4, 2, 2)


def test_sd_vae_is_frozen_through_a_training_step(vae_dir):
    model = tiny_model(autoencoder=f"sd-vae:{vae_dir}", dropout=0.0)
    vae = model.autoencoder.vae
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == model.n_parameters() - sum(
        p.numel() for p in vae.parameters()
    )
    pr = model.perception_net
    pr_before = [m.weight.detach().clone() for m in (pr.ridge1, pr.blin1, pr.decoder.out[-1])]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    out = model.losses(_video_batch(), mix=True)
    out["total"].backward()
    optimizer.step()
    assert torch.isfinite(out["total"]) and out["blur_l1"] > 0
    assert all(p.grad is None for p in vae.parameters())
    assert all(torch.equal(v, before[k]) for k, v in vae.state_dict().items())
    after = (pr.ridge1.weight, pr.blin1.weight, pr.decoder.out[-1].weight)  # the PR learns from the latents
    assert not any(torch.equal(a, b) for a, b in zip(pr_before, after, strict=True))


def test_sd_vae_weights_stay_out_of_the_saved_decoder(vae_dir, tmp_path):
    model = tiny_model(autoencoder=f"sd-vae:{vae_dir}").eval()
    keys = set(model.state_dict())
    assert not any(k.startswith("autoencoder.") for k in keys) and "text_pivot" in keys
    model.save_pretrained(tmp_path / "model")
    loaded = NeuroClips.load_pretrained(tmp_path / "model", n_voxels=40)  # the VAE comes from its folder
    voxels, frames = torch.randn(3, 40), torch.rand(1, 3, 3, 16, 16)
    for key, value in model(voxels).items():
        torch.testing.assert_close(loaded(voxels)[key], value, rtol=0, atol=0)
    torch.testing.assert_close(loaded.encode_frames(frames), model.encode_frames(frames), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="Missing key"):  # other keys are still checked
        loaded.load_state_dict({k: v for k, v in model.state_dict().items() if k != "text_pivot"})


def test_absent_sd_vae_sizes_and_predicts_but_never_trains(caplog):
    model = tiny_model(autoencoder="sd-vae:someone/absent-vae")
    assert "someone/absent-vae is not on this machine" in caplog.text
    assert model.autoencoder.latent_shape == (4, 2, 2)
    assert sum(p.numel() for p in model.autoencoder.parameters()) == 83_653_863  # SD's kl-f8 architecture
    assert model(torch.randn(2, 40))["frame_latents"].shape == (2, 3, 4, 2, 2)
    fetch = r"(?s)someone--absent-vae.*hf download someone/absent-vae .*autoencoder: sd-vae:/some/dir"
    with pytest.raises(MissingFileError, match=fetch):
        model.losses(_video_batch(), mix=False)
    with pytest.raises(MissingFileError, match="someone--absent-vae"):
        model.autoencoder.decode(torch.zeros(1, 4, 2, 2))


def test_sd_vae_folder_forms(vae_dir, tmp_path):
    import shutil

    shutil.copytree(vae_dir, tmp_path / "pipeline" / "vae")  # a pipeline folder: its vae/ is used
    model = tiny_model(autoencoder=f"sd-vae:{tmp_path / 'pipeline'}")
    frames = torch.rand(1, 3, 3, 16, 16)
    reference = tiny_model(autoencoder=f"sd-vae:{vae_dir}")
    torch.testing.assert_close(model.encode_frames(frames), reference.encode_frames(frames), rtol=0, atol=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="neither a diffusers AutoencoderKL folder"):
        tiny_model(autoencoder=f"sd-vae:{tmp_path / 'empty'}")
    (tmp_path / "pickled").mkdir()
    shutil.copy(vae_dir / "config.json", tmp_path / "pickled")
    with pytest.raises(MissingFileError, match="no safetensors weights"):  # .bin files are never unpickled
        tiny_model(autoencoder=f"sd-vae:{tmp_path / 'pickled'}")
    with pytest.raises(ConfigError, match=r"'world-video-ae', 'sd-vae:<model id or folder>' or null"):
        tiny_model(autoencoder="sd-vae-ft-mse")


def test_animatediff_generator_is_registered(tmp_path):
    spec = {
        "kind": "animatediff-sparsectrl",
        "inputs": {"blurry": "frame_latents"},
        "options": {"model": "someone/absent-sd"},
    }
    context = GenerationContext(tmp_path, None, "none", None, np.arange(0), image_size=16)
    # resolved and built (an unknown kind is a ConfigError): the absent base model is what stops it
    with pytest.raises(MissingFileError, match="hf download someone/absent-sd"):
        build_generator(spec, context)
    assert AnimateDiffSparseCtrlGenerator.generator_id == spec["kind"]


def test_real_scale_config_wires_the_sd_vae_to_animatediff():
    config = load_method_config("neuroclips", "cc2017")
    assert config["model"]["init_args"]["autoencoder"] == "sd-vae:stabilityai/sd-vae-ft-mse"
    generator = config["generator"]
    assert generator["kind"] == "animatediff-sparsectrl"
    assert generator_inputs(generator) == {"blurry": "frame_latents"}  # the PR's SD-VAE latents
    options = generator["options"]
    assert (options["strength"], options["alpha_form"], options["n_frames"]) == (0.3, "paper", 16)
    assert (options["steps"], options["guidance_scale"], options["resolution"]) == (25, 8.5, 256)
    accepted = {"prompt", "negative_prompt"}  # read by encode_fixed
    for function in (
        AnimateDiffSparseCtrlGenerator.from_config,
        AnimateDiffSparseCtrlGenerator.__init__,
        LatentDiffusionGenerator.__init__,
    ):
        accepted |= set(inspect.signature(function).parameters)
    assert set(options) <= accepted - {"inputs", "context", "parts", "fixed", "image_size", "seed"}


class _NoImageBackbone:
    """Stands in for the CLIP backbone when a cache holds only frames and latents (no image feature)."""

    backbone_id = "none:test"

    def forward_features(self, images, layers=()):
        return {}


@pytest.mark.parametrize("autoencoder", ["world-video-ae", "sd-vae"])
def test_feature_cache_latents_are_what_neuroclips_trains_on(autoencoder, vae_dir, tmp_path):
    """The cache's ``latents:<px>:<autoencoder>`` = the frozen autoencoder on the cached float16 frames."""
    from brainbench.backbones.frame_autoencoder import latent_target_name
    from brainbench.data.feature_cache import FeatureCache
    from brainbench.data.stimulus_store import write_stimulus_store

    size = 64 if autoencoder == "world-video-ae" else 16
    ae_id = autoencoder if autoencoder == "world-video-ae" else f"sd-vae:{vae_dir}"
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (5, 3, size, size, 3), dtype=np.uint8)
    ids = np.array([3, 4, 7, 8, 9])
    store = tmp_path / "stimuli.hdf5"
    write_stimulus_store(store, ids, None, [["a"]] * 5, [["c"]] * 5, frames=clips, keyframe=1)
    names = (f"frames:{size}", latent_target_name(ae_id, size))
    cache = FeatureCache.build(tmp_path, store, "0" * 64, _NoImageBackbone(), names=names, progress=False)
    assert cache.record["float32"] == [names[1]] and cache.shape(names[1])[0] == 3

    shapes = {k: v for k, v in SHAPES.items() if k != "frames:16"}
    shapes |= {names[0]: cache.shape(names[0]), names[1]: cache.shape(names[1])}
    widths = (8,) * (4 if size == 64 else 2)  # up to the 8- or 2-side latent
    model = tiny_model(autoencoder=ae_id, target_shapes=shapes, frames_target=names[0], decoder_widths=widths)
    assert model.latent_target() == names[1]
    batch = {"voxels": torch.zeros(2, 40), **cache.lookup(np.array([8, 3]))}
    expected = model.encode_frames(batch[names[0]])  # what NeuroClips encoded itself before the cache did
    # equal up to float rounding: the cache encodes every stimulus in one call, here two clips are encoded
    torch.testing.assert_close(model.true_latents(batch), expected)
    assert not torch.equal(batch[names[1]], torch.zeros_like(batch[names[1]]))
    batch.pop(names[1])  # without the cached target (an older config) the frames are encoded here
    torch.testing.assert_close(model.true_latents(batch), expected, rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"has shape"):
        tiny_model(
            autoencoder=ae_id,
            target_shapes=shapes | {names[1]: (3, 1, 1, 1)},
            frames_target=names[0],
            decoder_widths=widths,
        )


def test_latent_target_names_and_shapes_without_weights():
    from brainbench.backbones.frame_autoencoder import (
        latent_target_name,
        latent_target_shape,
        load_autoencoder,
        parse_latent_target,
    )

    name = latent_target_name("sd-vae:stabilityai/sd-vae-ft-mse", 224)
    assert parse_latent_target(name) == (224, "sd-vae:stabilityai/sd-vae-ft-mse")
    assert latent_target_shape(name, 6) == (6, 4, 28, 28)  # what the real-scale PR regresses
    assert latent_target_shape("latents:64:world-video-ae", 6) == (6, *load_autoencoder().latent_shape)
    with pytest.raises(ConfigError, match=r"latents:<pixels>:<autoencoder>"):
        parse_latent_target("latents:world-video-ae")
