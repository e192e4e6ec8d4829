"""The world video stage: shipped checkpoints, generator output, keyframe injection, ablations, fusion."""

import json

import numpy as np
import pytest
import torch

from brainbench.backbones.frame_autoencoder import (
    AE_NAME,
    WEIGHTS_FILE,
    FrameAutoencoder,
    asset_dir,
    load_autoencoder,
    load_card,
)
from brainbench.backbones.world_clip import sha256_file
from brainbench.backbones.world_video import GENERATOR_NAME, load_video_model, to_uint8_clips
from brainbench.errors import ConfigError, DataFormatError
from brainbench.generators.video import WorldVideoGenerator, neighbour_rows
from brainbench.metrics.video import frame_psnr

INPUTS = {"blurry": "frame_latents", "keyframe": "clip_tokens", "caption": "clip_text"}


@pytest.fixture(scope="module")
def shipped():
    return load_autoencoder(), load_video_model()


def conditions(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "blurry": torch.randn(n, 6, 4, 8, 8, generator=g),
        "keyframe": torch.randn(n, 65, 128, generator=g),
        "caption": torch.randn(n, 128, generator=g),
    }


def generator(shipped, **options):
    return WorldVideoGenerator(INPUTS, *shipped, image_size=64, **options)


@pytest.mark.parametrize("name", [AE_NAME, GENERATOR_NAME])
def test_shipped_checkpoints_match_their_cards(name):
    card = load_card(name)
    assert sha256_file(asset_dir(name) / WEIGHTS_FILE) == card["sha256"]
    assert card["command"].startswith("python -m brainbench.generators.train_video")
    assert card["held_out_metrics"]["held_out"]
    size = (asset_dir(name) / WEIGHTS_FILE).stat().st_size
    assert size < 2_500_000  # fp16, small enough to ship


def test_a_tampered_checkpoint_is_refused(tmp_path):
    folder = tmp_path / AE_NAME
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps(load_card(AE_NAME)))
    data = bytearray((asset_dir(AE_NAME) / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 1
    (folder / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match="sha256 does not match"):
        load_autoencoder(folder)


def test_autoencoder_reconstructs_world_frames(shipped):
    """Fresh world movies (not the training ones): normalised latents, PSNR above 20 dB and a flat frame's."""
    from brainbench.world.video import render_movie

    movies = [
        render_movie("probe", seed=5, key=(77, k), duration_s=8.0, fps=3, frame_size=64) for k in (1, 2, 3)
    ]
    frames = torch.from_numpy(np.concatenate([m.frames for m in movies])).permute(0, 3, 1, 2).float() / 255
    ae = shipped[0]
    with torch.no_grad():
        latents = ae.encode(frames)
        recon = ae.decode(latents)
    assert latents.shape == (len(frames), 4, 8, 8)
    # normalised (the raw latents have means of -6..-1 and sds of 4..7 per channel, see the card)
    assert abs(float(latents.mean())) < 1.0 and 0.3 < float(latents.std()) < 3.0
    truth = to_uint8_clips(frames[None], 64)
    flat = frames.mean(dim=(0, 2, 3), keepdim=True).expand_as(frames)  # every frame the mean colour
    psnr = frame_psnr(to_uint8_clips(recon[None], 64), truth).mean()
    assert psnr > 20.0 and psnr > frame_psnr(to_uint8_clips(flat[None], 64), truth).mean() + 2
    assert load_card(AE_NAME)["model"] == ae.config()


def test_generator_output_shape_dtype_and_determinism(shipped):
    out = generator(shipped, seed=3).generate(conditions())
    assert out.shape == (4, 6, 64, 64, 3) and out.dtype == torch.uint8
    assert torch.equal(out, generator(shipped, seed=3).generate(conditions()))
    assert not torch.equal(out, generator(shipped, seed=4).generate(conditions()))  # the init noise
    smaller = WorldVideoGenerator(INPUTS, *shipped, image_size=32).generate(conditions(2))
    assert smaller.shape == (2, 6, 32, 32, 3)


def test_keyframe_changes_frame_zero_more_than_the_last_frame(shipped):
    """The trained generator: swapping keyframes moves frame 0 most (the keyframe is injected there)."""
    gen = generator(shipped)
    base = conditions(8)
    swapped = {**base, "keyframe": base["keyframe"].roll(1, dims=0)}
    change = (gen.generate(base).float() - gen.generate(swapped).float()).abs().mean(dim=(0, 2, 3, 4))
    assert change[0] > change[-1] > 0


def test_keyframe_reaches_other_frames_only_through_temporal_attention(shipped):
    ae, model = shipped
    model = load_video_model()
    with torch.no_grad():
        for layer in model.frame_generator.temporal:
            layer.eta.fill_(1.0)
    gen = WorldVideoGenerator(INPUTS, ae, model, image_size=64)
    base = conditions(3)
    swapped = {**base, "keyframe": base["keyframe"].roll(1, dims=0)}
    a, b = gen.generate(base), gen.generate(swapped)
    assert torch.equal(a[:, 1:], b[:, 1:]) and not torch.equal(a[:, 0], b[:, 0])


def test_ablation_switches_remove_their_input(shipped):
    base = conditions(3)
    other_blurry = {**base, "blurry": torch.randn(3, 6, 4, 8, 8)}
    other_key = {**base, "keyframe": torch.randn(3, 65, 128)}
    no_blurry, no_key, full = (
        generator(shipped, use_blurry=False),
        generator(shipped, use_keyframe=False),
        generator(shipped),
    )
    assert torch.equal(no_blurry.generate(base), no_blurry.generate(other_blurry))
    assert torch.equal(no_key.generate(base), no_key.generate(other_key))
    assert not torch.equal(full.generate(base), full.generate(other_blurry))
    assert not torch.equal(full.generate(base), full.generate(other_key))
    assert (no_blurry.full_id, no_key.full_id, full.full_id) == (
        "world-video-noblur",
        "world-video-nokey",
        "world-video",
    )


def test_blurry_mode_decodes_the_latents(shipped):
    ae = shipped[0]
    base = conditions(2)
    out = generator(shipped, mode="blurry").generate(base)
    with torch.no_grad():
        expected = to_uint8_clips(ae.decode(base["blurry"].flatten(0, 1)).unflatten(0, (2, 6)), 64)
    assert torch.equal(out, expected)


def test_neighbour_rows_follow_cc2017_ids():
    ids = np.array([1000, 1001, 1003, 2004, 2005, 102000, 102001])
    assert neighbour_rows(ids).tolist() == [False, True, False, False, True, False, True]


def test_fusion_replaces_keyframes_of_same_class_successors_only(shipped):
    ids = np.array([101000, 101001, 101002, 102000, 102001])
    base = conditions(5)
    plain = generator(shipped).generate(base)
    always = generator(shipped, fusion=True, fusion_threshold=0.0, stim_ids=ids)
    never = generator(shipped, fusion=True, fusion_threshold=1.0, stim_ids=ids)
    fused = always.generate(base)
    assert always.n_fused == 3  # every row that follows one in its movie
    assert torch.equal(never.generate(base), plain) and never.n_fused == 0
    assert torch.equal(fused[[0, 3]], plain[[0, 3]])  # first clips of each movie keep their keyframe
    assert not torch.equal(fused[1], plain[1])


def test_bad_options_fail_clearly(shipped):
    with pytest.raises(ConfigError, match=r"strength must be in \[0, 1\]"):
        generator(shipped, strength=1.5)
    with pytest.raises(ConfigError, match="fusion needs the rows' stimulus ids"):
        generator(shipped, fusion=True)
    with pytest.raises(ConfigError, match="mode must be"):
        generator(shipped, mode="diffusion")
    with pytest.raises(ConfigError, match="multiple of 8"):
        FrameAutoencoder(image_size=60)
