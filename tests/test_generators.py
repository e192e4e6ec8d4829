"""Generators: retrieval bank, shipped world decoders, diffusers backends on tiny models, the registry."""

import json
import shutil

import numpy as np
import pytest
import torch

from brainbench.backbones.world_clip import sha256_file
from brainbench.backbones.world_decoder import (
    VARIANTS,
    WEIGHTS_FILE,
    WorldDecoder,
    decoder_dir,
    list_variants,
    load_card,
    load_world_decoder,
)
from brainbench.data.feature_cache import FeatureCache
from brainbench.data.manifest import Manifest
from brainbench.data.stimulus_store import write_stimulus_store
from brainbench.errors import ConfigError, DataFormatError, MissingFileError
from brainbench.generators import GenerationContext, build_generator
from brainbench.generators.retrieval import RetrievalGenerator, nearest_rows
from brainbench.generators.world_decoder import WorldDecoderGenerator

N_STIMULI, SIDE = 12, 16
TEST_IDS = np.array([1, 5, 9])


class _StubBackbone:
    """Deterministic 'embeddings' of images (a fixed random projection of the pixels)."""

    backbone_id = "stub:v0"

    def __init__(self):
        self.projection = torch.randn(SIDE * SIDE * 3, 8, generator=torch.Generator().manual_seed(0))

    def forward_features(self, images, layers=()):
        flat = images.reshape(len(images), -1).float() / 255.0
        return {"clip_image": flat @ self.projection}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N_STIMULI, SIDE, SIDE, 3), dtype=np.uint8)
    ids = np.arange(N_STIMULI)
    write_stimulus_store(
        root / "stimuli.hdf5", ids, images, [["a caption"]] * N_STIMULI, [["cat"]] * N_STIMULI
    )
    cache = FeatureCache.build(
        root, root / "stimuli.hdf5", "sha", _StubBackbone(), names=("clip_image",), progress=False
    )
    manifest = Manifest(
        dataset="test", dataset_version="0", subject=1, n_voxels=4, voxel_order="", voxel_ijk=[], rois={},
        normalisation={}, split_name="test", splits={}, created="",
        stimulus_store={"path": "stimuli.hdf5", "sha256": "sha", "n_stimuli": N_STIMULI}, source={},
    )  # fmt: skip
    return root, images, cache, manifest


def make_context(prepared, backbone_id="world-clip:v1", image_size=SIDE):
    root, _, cache, manifest = prepared
    train_ids = np.setdiff1d(np.arange(N_STIMULI), TEST_IDS)
    return GenerationContext(root, manifest, backbone_id, cache, train_ids, image_size, seed=0)


# ----------------------------------------------------------------------------------------------- retrieval
def test_nearest_rows_is_scale_invariant_under_cosine():
    bank = torch.randn(50, 8)
    queries = bank[[3, 17, 42]] * torch.tensor([[0.01], [5.0], [100.0]])
    assert nearest_rows(queries, bank).tolist() == [3, 17, 42]


def test_retrieval_returns_the_bank_image_of_an_exact_embedding(prepared):
    _, images, cache, _ = prepared
    generator = RetrievalGenerator.from_config({"clip_image": "clip_image"}, make_context(prepared))
    train_ids = np.setdiff1d(np.arange(N_STIMULI), TEST_IDS)
    queries = cache.lookup(train_ids[::-1].copy())["clip_image"] * 3.0
    out = generator.generate({"clip_image": queries})
    assert out.dtype == torch.uint8 and out.shape == (len(train_ids), SIDE, SIDE, 3)
    assert np.array_equal(out.numpy(), images[train_ids[::-1]])
    assert np.array_equal(generator.last_stim_ids, train_ids[::-1])


def test_retrieval_never_returns_a_test_stimulus(prepared):
    _, images, cache, _ = prepared
    generator = RetrievalGenerator.from_config({"clip_image": "clip_image"}, make_context(prepared))
    queries = torch.cat([cache.lookup(TEST_IDS)["clip_image"], torch.randn(20, 8)])
    out = generator.generate({"clip_image": queries}).numpy()
    assert not set(generator.last_stim_ids.tolist()) & set(TEST_IDS.tolist())
    for test_image in images[TEST_IDS]:
        assert not (out == test_image).all(axis=(1, 2, 3)).any()


def test_retrieval_resizes_to_the_context_size_and_rejects_uncached_features(prepared):
    generator = RetrievalGenerator.from_config(
        {"clip_image": "clip_image"}, make_context(prepared, image_size=8)
    )
    assert generator.generate({"clip_image": torch.randn(2, 8)}).shape == (2, 8, 8, 3)
    with pytest.raises(ConfigError, match="data.targets"):
        RetrievalGenerator.from_config({"clip_tokens": "clip_tokens"}, make_context(prepared))


# ---------------------------------------------------------------------------------------- world decoder
def test_decoder_normalises_its_inputs():
    torch.manual_seed(0)
    decoder = WorldDecoder({"clip_image": (128,), "detail": (65, 192)}).eval()
    inputs = {"clip_image": torch.randn(3, 128), "detail": torch.randn(3, 65, 192)}
    scaled = {"clip_image": inputs["clip_image"] * 7.0, "detail": inputs["detail"] * 0.2}
    with torch.no_grad():
        out, out_scaled = decoder(inputs), decoder(scaled)
    assert out.shape == (3, 3, 64, 64) and 0 <= out.min() and out.max() <= 1
    torch.testing.assert_close(out, out_scaled, atol=1e-4, rtol=0)


def test_every_variant_is_shipped_with_a_matching_sha256():
    assert list_variants() == list(VARIANTS)
    for variant in VARIANTS:
        card = load_card(variant)
        assert card["sha256"] == sha256_file(decoder_dir(variant) / WEIGHTS_FILE)
        assert card["inputs"] == list(VARIANTS[variant]) and card["backbone"] == "world-clip:v1"
        assert (decoder_dir(variant) / WEIGHTS_FILE).stat().st_size < 3_000_000
        assert card["n_params"] < 1_500_000
        assert {"pixcorr", "ssim"} <= set(card["held_out"]["true_features"])


def test_tampered_weights_are_refused(tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(decoder_dir("image"), folder)
    data = bytearray((folder / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (folder / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match="sha256"):
        load_world_decoder("image", directory=folder)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_world_decoder_generator_shapes_and_determinism(prepared, variant):
    shapes = load_card(variant)["model"]["input_shapes"]
    inputs = {name: name for name in shapes}
    generator = build_generator(
        {"kind": "world-decoder", "inputs": inputs}, make_context(prepared, image_size=32)
    )
    assert generator.variant == variant
    conditions = {
        n: torch.randn(5, *s, generator=torch.Generator().manual_seed(1)) for n, s in shapes.items()
    }
    out = generator.generate(conditions)
    assert out.dtype == torch.uint8 and out.shape == (5, 32, 32, 3)
    assert torch.equal(out, generator.generate(conditions))


def test_world_decoder_refuses_other_backbones_and_unknown_input_sets(prepared):
    with pytest.raises(ConfigError, match="world-clip:v1 features"):
        WorldDecoderGenerator.from_config(
            {"clip_image": "clip_image"}, make_context(prepared, "ViT-L-14:openai")
        )
    with pytest.raises(ConfigError, match="variants: image = "):
        WorldDecoderGenerator.from_config({"clip_text": "clip_text"}, make_context(prepared))
    with pytest.raises(ConfigError, match="unknown world decoder variant"):
        WorldDecoderGenerator.from_config({"clip_image": "x"}, make_context(prepared), variant="pixels")
    with pytest.raises(ConfigError, match="takes"):
        WorldDecoderGenerator.from_config({"clip_image": "x"}, make_context(prepared), variant="tokens")


@pytest.fixture(scope="module")
def held_out_scenes():
    from brainbench.backbones.openclip import load_backbone
    from brainbench.backbones.world_decoder import world_features
    from brainbench.world.stimuli import generate_stimuli
    from brainbench.world.train_world_decoder import EVAL_SEED, TRAIN_SEED

    stimuli = generate_stimuli(48, seed=EVAL_SEED + 1000, image_size=64)  # neither training nor card scenes
    features = world_features(load_backbone("world-clip:v1"), stimuli.images, stimuli.captions)
    mean_image = generate_stimuli(300, seed=TRAIN_SEED, image_size=64).images.astype(np.float32).mean(axis=0)
    return stimuli.images, features, mean_image


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_shipped_decoder_beats_the_mean_image(held_out_scenes, variant):
    from brainbench.metrics.image_metrics import pixcorr

    images, features, mean_image = held_out_scenes
    decoder = load_world_decoder(variant)
    with torch.no_grad():
        decoded = decoder({n: features[n] for n in decoder.input_shapes})
    target = torch.from_numpy(images)
    baseline = (
        torch.from_numpy(np.rint(mean_image).astype(np.uint8)).expand(len(images), -1, -1, -1).contiguous()
    )
    decoder_r = float(pixcorr(decoded, target, chain="native"))
    baseline_r = float(pixcorr(baseline, target, chain="native"))
    assert decoder_r > baseline_r + 0.15, (decoder_r, baseline_r)


def test_training_writes_a_loadable_checkpoint_and_card(tmp_path, monkeypatch):
    from brainbench.world import train_world_decoder as training

    monkeypatch.setattr(training, "N_EVAL", 6)
    monkeypatch.setattr(training, "RETRIEVAL_BANK", 10)
    out = tmp_path / "world-decoder-image"
    card = training.train_world_decoder("image", out, tmp_path / "data", n_scenes=12, steps=2, batch_size=4)
    assert json.loads((out / "card.json").read_text()) == card
    assert card["sha256"] == sha256_file(out / WEIGHTS_FILE)
    assert set(card["held_out"]) >= {"true_features", "mean_image", "retrieval_clip_image_bank10"}
    assert isinstance(load_world_decoder("image", directory=out), WorldDecoder)
    assert (tmp_path / "data" / f"{training.TRAIN_SEED}-12" / "record.json").is_file()


# ----------------------------------------------------------------------------------------------- diffusers
CROSS, EMBED = 24, 16


def _tiny_unet(**extra):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS, attention_head_dim=4, norm_num_groups=8, **extra,
    )  # fmt: skip


def _tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 16), latent_channels=4, norm_num_groups=8, sample_size=16,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )  # fmt: skip


def _scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=100, beta_schedule="scaled_linear", clip_sample=False)


def _tiny_unclip_parts():
    from diffusers import DDPMScheduler
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )

    unet = _tiny_unet(class_embed_type="projection", projection_class_embeddings_input_dim=2 * EMBED)
    normalizer = StableUnCLIPImageNormalizer(embedding_dim=EMBED)
    noising = DDPMScheduler(num_train_timesteps=100)
    return {"unet": unet, "vae": _tiny_vae(), "scheduler": _scheduler(), "image_normalizer": normalizer,
            "image_noising_scheduler": noising}  # fmt: skip


def _sd_parts(**unet_extra):
    return {"unet": _tiny_unet(**unet_extra), "vae": _tiny_vae(), "scheduler": _scheduler()}


def test_unclip_generates_uint8_images_from_predicted_embeddings():
    from brainbench.generators.diffusers_backends import UnCLIPGenerator

    null = torch.randn(1, 5, CROSS, generator=torch.Generator().manual_seed(0))
    fixed = {"prompt_embeds": null, "negative_prompt_embeds": null}
    generator = UnCLIPGenerator(
        {"clip_image": "clip_image"},
        _tiny_unclip_parts(),
        fixed,
        image_size=20,
        steps=3,
        noise_level=5,
        batch_size=2,
    )
    embeds = torch.randn(3, EMBED)
    out = generator.generate({"clip_image": embeds})
    assert out.dtype == torch.uint8 and out.shape == (3, 20, 20, 3)
    assert torch.equal(out, generator.generate({"clip_image": embeds}))
    assert not torch.equal(out, generator.generate({"clip_image": -embeds}))
    labels = generator.image_condition(embeds, torch.Generator().manual_seed(0))
    assert labels.shape == (3, 2 * EMBED)
    with pytest.raises(ConfigError, match="width 16"):
        generator.generate({"clip_image": torch.randn(2, 128)})


def test_unclip_loads_a_local_diffusers_folder(tmp_path, prepared):
    from safetensors.torch import save_file

    for name, part in _tiny_unclip_parts().items():
        part.save_pretrained(tmp_path / name)
    null = torch.zeros(1, 5, CROSS)
    save_file(
        {"prompt_embeds": null, "negative_prompt_embeds": null.clone()}, tmp_path / "conditioning.safetensors"
    )
    spec = {
        "kind": "unclip",
        "inputs": {"clip_image": "pred"},
        "options": {"model": str(tmp_path), "steps": 2},
    }
    generator = build_generator(spec, make_context(prepared, image_size=12))
    out = generator.generate_from_predictions({"pred": torch.randn(2, EMBED)})
    assert out.shape == (2, 12, 12, 3) and out.dtype == torch.uint8
    (tmp_path / "conditioning.safetensors").unlink()
    save_file({"prompt_embeds": null}, tmp_path / "conditioning.safetensors")
    with pytest.raises(ConfigError, match="lacks"):
        build_generator(spec, make_context(prepared))


def test_absent_weights_name_the_model_and_the_fetch_command(prepared):
    for kind, name in (
        ("unclip", "clip_image"),
        ("versatile-diffusion", "clip_tokens"),
        ("sd-img2img", "init_image"),
    ):
        spec = {"kind": kind, "inputs": {name: "x"}, "options": {"model": "someone/absent-model"}}
        with pytest.raises(MissingFileError, match=r"someone/absent-model.*hf download someone/absent-model"):
            build_generator(spec, make_context(prepared))
    with pytest.raises(MissingFileError, match="/no/such/dir"):
        spec = {"kind": "unclip", "inputs": {"clip_image": "x"}, "options": {"model": "/no/such/dir"}}
        build_generator(spec, make_context(prepared))


def test_versatile_diffusion_image_and_dual_guided():
    from diffusers.models import DualTransformer2DModel

    from brainbench.generators.diffusers_backends import VersatileDiffusionGenerator

    fixed = {
        "negative_image_embeds": torch.randn(1, 9, CROSS),
        "negative_prompt_embeds": torch.randn(1, 5, CROSS),
    }
    image_only = VersatileDiffusionGenerator({"clip_tokens": "t"}, _sd_parts(), fixed, image_size=16, steps=2)
    tokens = torch.randn(2, 9, CROSS)
    out = image_only.generate({"clip_tokens": tokens})
    assert out.shape == (2, 16, 16, 3) and out.dtype == torch.uint8
    # VD divides the tokens by the CLS norm, so the scale of a prediction does not matter
    assert torch.equal(out, image_only.generate({"clip_tokens": tokens * 4.0}))
    parts = {**_sd_parts(), "text_unet": _tiny_unet()}
    dual = VersatileDiffusionGenerator(
        {"clip_tokens": "a", "text_tokens": "b"}, parts, fixed, image_size=16, steps=2
    )
    assert any(isinstance(m, DualTransformer2DModel) for m in dual.unet.modules())
    assert dual.generate({"clip_tokens": tokens, "text_tokens": torch.randn(2, 5, CROSS)}).shape == (
        2,
        16,
        16,
        3,
    )


def test_img2img_refines_another_generators_output(prepared):
    from brainbench.generators.diffusers_backends import Img2ImgGenerator

    init = RetrievalGenerator.from_config({"clip_image": "clip_image"}, make_context(prepared))
    fixed = {"negative_prompt_embeds": torch.zeros(1, 5, CROSS)}
    generator = Img2ImgGenerator(
        {"prompt_embeds": "text_states"}, _sd_parts(), fixed, SIDE, init_generator=init, steps=4, strength=0.5
    )
    predictions = {"clip_image": torch.randn(3, 8), "text_states": torch.randn(3, 5, CROSS)}
    out = generator.generate_from_predictions(predictions)
    assert out.shape == (3, SIDE, SIDE, 3) and out.dtype == torch.uint8
    with pytest.raises(ConfigError, match="exactly one source"):
        Img2ImgGenerator({"init_image": "x"}, _sd_parts(), fixed, SIDE, init_generator=init)
    with pytest.raises(ConfigError, match="strength"):
        Img2ImgGenerator({"init_image": "x"}, _sd_parts(), fixed, SIDE, strength=0.0)


def test_fixed_conditioning_without_file_or_encoders_is_a_clear_error(tmp_path):
    pytest.importorskip("diffusers")
    if __import__("importlib").util.find_spec("transformers") is not None:
        pytest.skip("transformers is installed: the encoders would be used")
    from brainbench.generators.diffusers_backends import load_conditioning

    with pytest.raises(ConfigError, match="conditioning.safetensors"):
        load_conditioning(tmp_path, ("prompt_embeds",), lambda: {})


# ----------------------------------------------------------------------------------------------- registry
def test_build_generator_errors(prepared):
    context = make_context(prepared)
    with pytest.raises(
        ConfigError, match="unknown generator kind 'dreamer'; available: animatediff-sparsectrl, retrieval"
    ):
        build_generator({"kind": "dreamer", "inputs": {"clip_image": "clip_image"}}, context)
    with pytest.raises(ConfigError, match="'inputs' mapping"):
        build_generator({"kind": "retrieval"}, context)
    generator = build_generator({"kind": "retrieval", "inputs": {"clip_image": "brain_clip"}}, context)
    with pytest.raises(ConfigError, match=r"needs predictions \['brain_clip'\]"):
        generator.generate_from_predictions({"clip_image": torch.randn(2, 8)})


def test_generator_registry_lists_and_loads_every_kind():
    from brainbench.generators import GENERATORS
    from brainbench.generators.base import ImageGenerator
    from brainbench.registry import Registry

    assert isinstance(GENERATORS, Registry)
    assert list(GENERATORS) == GENERATORS.list() == sorted(GENERATORS.list())
    assert {"retrieval", "world-decoder", "world-video", "animatediff-sparsectrl"} <= set(GENERATORS)
    for kind in GENERATORS.list():  # each id imports to the generator class of that id
        cls = GENERATORS.load(kind)
        assert issubclass(cls, ImageGenerator) and cls.generator_id == kind
