"""open_clip backbones: named outputs agree with open_clip, input formats, ids and offline errors."""

import time
import types

import open_clip
import pytest
import torch
import torch.nn.functional as F

from brainbench.backbones.openclip import ImageBackbone, load_backbone
from brainbench.errors import ConfigError, MissingFileError


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return load_backbone("world-clip:random")


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8, generator=generator)


def test_info_of_the_world_clip(backbone):
    info = backbone.info
    assert info.backbone_id == "world-clip:random"
    assert (info.image_size, info.n_tokens, info.embed_dim, info.width, info.n_layers) == (
        64,
        65,
        128,
        192,
        4,
    )


def test_backbone_is_frozen(backbone):
    assert not backbone.model.training
    assert not any(p.requires_grad for p in backbone.parameters())


def test_clip_image_equals_open_clip_encode_image(backbone, images):
    out = backbone.forward_features(images)
    with torch.no_grad():
        expected = backbone.model.encode_image(backbone.preprocess(images))
    assert out["clip_image"].shape == (3, 128)
    torch.testing.assert_close(out["clip_image"], expected, atol=1e-4, rtol=1e-4)


def test_token_and_layer_shapes(backbone, images):
    out = backbone.forward_features(images, layers=(1, 2, 4))
    assert set(out) == {"clip_image", "clip_tokens", "layer:1", "layer:2", "layer:4"}
    assert out["clip_tokens"].shape == (3, 65, 128)
    for k in (1, 2, 4):
        assert out[f"layer:{k}"].shape == (3, 65, 192)
    visual = backbone.model.visual
    # clip_tokens is ln_post of the last block's residual stream, projected; its CLS row is clip_image
    torch.testing.assert_close(out["clip_tokens"], visual.ln_post(out["layer:4"]) @ visual.proj)
    torch.testing.assert_close(out["clip_tokens"][:, 0], out["clip_image"])
    assert not torch.allclose(out["layer:1"], out["layer:2"])


def test_uint8_hwc_and_float_chw_agree(backbone, images):
    as_float = images.permute(0, 3, 1, 2).float() / 255.0
    a = backbone.forward_features(images, layers=(2,))
    b = backbone.forward_features(as_float, layers=(2,))
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_small_inputs_are_resized(backbone):
    small = torch.rand(2, 3, 32, 32)
    pre = backbone.preprocess(small)
    assert pre.shape == (2, 3, 64, 64)
    resized = F.interpolate(small, size=(64, 64), mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(pre, (resized.clamp(0, 1) - backbone.mean) / backbone.std)
    same = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(backbone.preprocess(same), (same - backbone.mean) / backbone.std)
    assert backbone.forward_features(small)["clip_tokens"].shape == (2, 65, 128)


def test_encode_text(backbone):
    text = backbone.encode_text(["a red circle", "a picture of a tree", "one object: a key"])
    assert text.shape == (3, 128)
    with torch.no_grad():
        expected = backbone.model.encode_text(open_clip.get_tokenizer("world-clip")(["a red circle"]))
    torch.testing.assert_close(text[:1], expected)
    no_tokenizer = ImageBackbone(backbone.model, "world-clip:random")
    with pytest.raises(ConfigError, match="has no tokenizer"):
        no_tokenizer.encode_text(["x"])


def test_non_vit_towers_are_refused():
    fake = types.SimpleNamespace(visual=object())
    with pytest.raises(ConfigError, match="only ViT image towers"):
        ImageBackbone(fake, "RN50:random")


@pytest.mark.parametrize(
    ("backbone_id", "match"),
    [
        ("world-clip", r"must look like <arch>:<tag>"),
        ("NoSuchNet-99:random", r"unknown open_clip architecture 'NoSuchNet-99'"),
        ("ViT-B-32:no_such_tag", r"ViT-B-32 has no pretrained tag 'no_such_tag'.*openai"),
    ],
)
def test_bad_ids_raise_config_error(backbone_id, match):
    with pytest.raises(ConfigError, match=match):
        load_backbone(backbone_id)


def test_missing_local_files(tmp_path):
    with pytest.raises(MissingFileError, match=r"nowhere\.safetensors"):
        load_backbone(f"world-clip:{tmp_path / 'nowhere.safetensors'}")
    with pytest.raises(MissingFileError, match="local-dir folder"):
        load_backbone(f"local-dir:{tmp_path / 'absent'}")


def test_pretrained_tag_offline_says_how_to_pass_a_local_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    real_create = open_clip.create_model
    calls = []

    def create_model_offline(name, pretrained=None, **kwargs):
        calls.append((name, pretrained))
        if pretrained is not None:  # stand-in for the download attempt, which must not happen here
            raise RuntimeError(f"cannot download {name} {pretrained}: offline")
        return real_create(name, **kwargs)

    monkeypatch.setattr(open_clip, "create_model", create_model_offline)
    with pytest.raises(MissingFileError) as caught:
        load_backbone("ViT-L-14:openai")
    message = str(caught.value)
    assert calls == [("ViT-L-14", "openai")]
    assert "ViT-L-14:openai" in message
    assert "weights are not on this machine" in message
    assert "--backbone ViT-L-14:/path/to/open_clip_model.safetensors" in message
    assert "RuntimeError: cannot download" in message


def test_vit_b_32_random_info():
    started = time.perf_counter()
    torch.manual_seed(0)
    backbone = load_backbone("ViT-B-32:random")
    built_seconds = time.perf_counter() - started
    info = backbone.info
    assert (info.image_size, info.n_tokens, info.embed_dim, info.width, info.n_layers) == (
        224,
        50,
        512,
        768,
        12,
    )
    assert built_seconds < 30  # a guard: ~2-3 s on 2 busy cores
    out = backbone.forward_features(torch.zeros(1, 224, 224, 3, dtype=torch.uint8))
    assert out["clip_tokens"].shape == (1, 50, 512) and out["clip_image"].shape == (1, 512)


def test_cls_token_is_the_pooled_embedding(backbone, images):
    """Zero-shot scores token 0 of clip_tokens as the image embedding; true for class-token pooling."""
    assert backbone.cls_token_is_pooled
    out = backbone.forward_features(images)
    torch.testing.assert_close(out["clip_tokens"][:, 0], out["clip_image"])
