"""AnimateDiff + SparseCtrl generator: tiny config-built diffusers models saved to folders and loaded back."""

import numpy as np
import pytest
import torch

from brainbench.errors import ConfigError, MissingFileError
from brainbench.generators.animatediff import AnimateDiffSparseCtrlGenerator, interpolate_frames
from brainbench.generators.base import GenerationContext, ImageGenerator

CROSS, TOKENS, SIDE, F_IN, N_FRAMES, STEPS = 24, 5, 12, 3, 5, 4
INPUTS = {"blurry": "frame_latents", "keyframe": "keyframe_images", "prompt_embeds": "text_states"}


def _tiny_models():
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        MotionAdapter,
        SparseControlNetModel,
        UNet2DConditionModel,
    )

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS, attention_head_dim=4, norm_num_groups=8,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(8, 16), latent_channels=4, norm_num_groups=8, sample_size=16,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )  # fmt: skip
    scheduler = DDIMScheduler(num_train_timesteps=100, beta_schedule="scaled_linear", clip_sample=True)
    adapter = MotionAdapter(
        block_out_channels=(16, 32), motion_layers_per_block=1, motion_num_attention_heads=2,
        motion_norm_num_groups=8, motion_max_seq_length=8, use_motion_mid_block=False,
    )  # fmt: skip
    controlnet = SparseControlNetModel(
        conditioning_channels=4, down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"),
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, cross_attention_dim=CROSS,
        attention_head_dim=4, motion_num_attention_heads=2, motion_max_seq_length=8,
    )  # fmt: skip
    with torch.no_grad():  # a fresh ControlNet's zero convolutions ignore the condition: give them weights
        for param in controlnet.parameters():
            if not param.any():
                param.normal_(0, 0.2)
    return {"unet": unet, "vae": vae, "scheduler": scheduler}, adapter, controlnet


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("animatediff")
    sd, adapter, controlnet = _tiny_models()
    for name, part in sd.items():
        part.save_pretrained(root / "sd" / name)
    adapter.save_pretrained(root / "adapter")
    controlnet.save_pretrained(root / "sparsectrl")
    fixed = torch.randn(2, TOKENS, CROSS, generator=torch.Generator().manual_seed(3))
    save_file(
        {"prompt_embeds": fixed[:1], "negative_prompt_embeds": fixed[1:].clone()},
        root / "sd" / "conditioning.safetensors",
    )
    return root


def _context(root, seed=0):
    return GenerationContext(root, None, "none", None, np.arange(0), image_size=SIDE, seed=seed)


def _options(root, **extra):
    return {
        "model": str(root / "sd"), "motion_adapter": str(root / "adapter"),
        "controlnet": str(root / "sparsectrl"), "steps": STEPS, "guidance_scale": 2.0,
        "n_frames": N_FRAMES, "batch_size": 2, **extra,
    }  # fmt: skip


@pytest.fixture(scope="module")
def loaded(folders):
    return AnimateDiffSparseCtrlGenerator.from_config(INPUTS, _context(folders), **_options(folders))


def _variant(loaded, inputs=INPUTS, **options):
    """Another generator on the loaded components."""
    settings = {"steps": STEPS, "guidance_scale": 2.0, "n_frames": N_FRAMES, **options}
    return AnimateDiffSparseCtrlGenerator(inputs, loaded.parts, loaded.fixed, SIDE, **settings)


def _predictions(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {
        "frame_latents": torch.randn(n, F_IN, 4, 8, 8, generator=g),
        "keyframe_images": torch.randint(0, 256, (n, 20, 20, 3), generator=g, dtype=torch.uint8),
        "text_states": torch.randn(n, TOKENS, CROSS, generator=g),
    }


def _distance(a, b):
    return (a.float() - b.float()).abs().mean().item()


def test_interpolation_is_neuroclips_cccat():
    clips = torch.randn(2, 6, 3, 4, 4)
    out = interpolate_frames(clips, 16)
    expected = [clips[:, 0]]
    for i in range(5):
        a, b = clips[:, i], clips[:, i + 1]
        expected += [2 / 3 * a + 1 / 3 * b, 1 / 3 * a + 2 / 3 * b, b]
    torch.testing.assert_close(out, torch.stack(expected, dim=1))


def test_loaded_from_folders_generates_deterministic_clips(loaded, folders):
    assert loaded.scheduler.config.beta_schedule == "linear" and loaded.scheduler.config.steps_offset == 1
    assert not loaded.scheduler.config.clip_sample and loaded.resolution == 16
    predictions = _predictions()
    out = loaded.generate_from_predictions(predictions)
    assert out.dtype == torch.uint8 and out.shape == (3, F_IN, SIDE, SIDE, 3)
    assert torch.equal(out, loaded.generate_from_predictions(predictions))
    other_seed = AnimateDiffSparseCtrlGenerator.from_config(
        INPUTS, _context(folders, seed=1), **_options(folders)
    )
    assert not torch.equal(out, other_seed.generate_from_predictions(predictions))
    every_frame = _variant(loaded, output_frames=N_FRAMES).generate_from_predictions(predictions)
    assert every_frame.shape == (3, N_FRAMES, SIDE, SIDE, 3)


def test_blurry_frames_in_every_form(loaded):
    pixels = torch.randint(0, 256, (2, F_IN, 20, 20, 3), generator=torch.Generator().manual_seed(0))
    pixels = pixels.to(torch.uint8)
    conditions = {"keyframe": pixels[:, 0], "prompt_embeds": torch.randn(2, TOKENS, CROSS)}
    from_uint8 = loaded.generate({"blurry": pixels, **conditions})
    from_float = loaded.generate({"blurry": pixels.permute(0, 1, 4, 2, 3).float() / 255, **conditions})
    assert from_uint8.shape == (2, F_IN, SIDE, SIDE, 3) and torch.equal(from_uint8, from_float)
    small_latents = torch.randn(2, F_IN, 4, 4, 4)  # another resolution: decoded, resized, re-encoded
    assert loaded.generate({"blurry": small_latents, **conditions}).shape == (2, F_IN, SIDE, SIDE, 3)
    with pytest.raises(ConfigError, match="blurry must be frames"):
        loaded.generate({"blurry": torch.randn(2, F_IN, 5, 8, 8), **conditions})


def test_keyframe_reaches_frame_zero_through_sparsectrl(loaded):
    predictions = _predictions()
    other = {**predictions, "keyframe_images": 255 - predictions["keyframe_images"]}
    full = _variant(loaded, strength=1.0, output_frames=N_FRAMES)
    out, out_other = full.generate_from_predictions(predictions), full.generate_from_predictions(other)
    changes = [_distance(out[:, i], out_other[:, i]) for i in range(N_FRAMES)]
    assert changes[0] > 0.3 and changes[0] > 2 * max(changes[1:]), changes  # the others only via attention
    unscaled = _variant(loaded, strength=1.0, controlnet_scale=0.0)
    assert torch.equal(
        unscaled.generate_from_predictions(predictions), unscaled.generate_from_predictions(other)
    )


def test_alpha_guidance_keeps_the_blurry_video_at_low_strength(loaded):
    predictions = _predictions()
    latents = interpolate_frames(predictions["frame_latents"], N_FRAMES)[:, [0, 2, 4]]
    blurry = loaded.decode(latents.flatten(0, 1)).unflatten(0, (3, F_IN))
    assert torch.equal(_variant(loaded, strength=0.0).generate_from_predictions(predictions), blurry)
    low = _variant(loaded, strength=0.25).generate_from_predictions(predictions)  # 1 of 4 steps
    full = _variant(loaded, strength=1.0).generate_from_predictions(predictions)
    assert 2 * _distance(low, blurry) < _distance(full, blurry)
    released = _variant(loaded, strength=0.3, alpha_form="released").generate_from_predictions(predictions)
    ignored = _variant(loaded, strength=0.9, alpha_form="released").generate_from_predictions(predictions)
    assert torch.equal(released, ignored)
    assert _variant(loaded, alpha_form="released").full_id.endswith("+released-alpha")
    assert not torch.equal(released, _variant(loaded, strength=0.3).generate_from_predictions(predictions))


class _ConstantImages(ImageGenerator):
    generator_id = "constant"

    @classmethod
    def from_config(cls, inputs, context, **options):
        return cls(inputs)

    def generate(self, conditions):
        n = len(next(iter(conditions.values())))
        return torch.full((n, 20, 20, 3), 200, dtype=torch.uint8)


def test_keyframes_from_another_generator(loaded):
    predictions = _predictions()
    inputs = {"blurry": "frame_latents", "prompt_embeds": "text_states"}
    stub = _ConstantImages({"x": "text_states"})
    out = _variant(loaded, inputs, keyframe_generator=stub).generate_from_predictions(predictions)
    given = {"blurry": predictions["frame_latents"], "prompt_embeds": predictions["text_states"]}
    assert torch.equal(
        out, _variant(loaded).generate({**given, "keyframe": stub.generate({"x": given["blurry"]})})
    )
    from_blurry = _variant(loaded, inputs).generate_from_predictions(predictions)  # the blurry frame 0
    assert not torch.equal(out, from_blurry)
    with pytest.raises(ConfigError, match="not both"):
        _variant(loaded, keyframe_generator=stub)


def test_bad_inputs_are_config_errors(loaded):
    with pytest.raises(ConfigError, match="takes blurry"):
        _variant(loaded, {"keyframe": "k"})
    with pytest.raises(ConfigError, match="strength"):
        _variant(loaded, strength=1.5)
    predictions = _predictions()
    with pytest.raises(ConfigError, match="hidden states"):
        loaded.generate_from_predictions({**predictions, "text_states": torch.randn(3, CROSS)})
    with pytest.raises(ConfigError, match="width 24"):
        loaded.generate_from_predictions({**predictions, "text_states": torch.randn(3, TOKENS, 32)})


def test_absent_weights_name_the_model_and_the_fetch_command(folders):
    context = _context(folders)
    with pytest.raises(MissingFileError, match=r"someone/absent-sd.*hf download someone/absent-sd"):
        AnimateDiffSparseCtrlGenerator.from_config(
            INPUTS, context, **_options(folders, model="someone/absent-sd")
        )
    options = _options(folders, motion_adapter="someone/absent-adapter")
    with pytest.raises(MissingFileError, match=r"hf download someone/absent-adapter .*`motion_adapter: "):
        AnimateDiffSparseCtrlGenerator.from_config(INPUTS, context, **options)
    with pytest.raises(MissingFileError, match="SparseControlNetModel"):
        AnimateDiffSparseCtrlGenerator.from_config(
            INPUTS, context, **_options(folders, controlnet=str(folders))
        )
