"""The world CLIP: open_clip registration, local-dir folders, sha256 verification and errors."""

import hashlib
import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from brainbench.backbones import world_clip
from brainbench.backbones.world_clip import (
    WEIGHTS_FILE,
    WORLD_CLIP_ARCH,
    create_world_clip,
    encode_texts,
    load_world_clip_card,
    register_world_clip,
    sha256_file,
    world_clip_config,
    world_clip_tokenizer,
)
from brainbench.errors import DataFormatError, MissingFileError

FOLDER_MEAN = [0.25, 0.5, 0.75]
FOLDER_STD = [0.2, 0.3, 0.4]


def _write_folder(directory, model, sha256=None):
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, directory / WEIGHTS_FILE)
    config = {
        "model_cfg": world_clip_config(),
        "preprocess_cfg": {
            "size": 64,
            "mean": FOLDER_MEAN,
            "std": FOLDER_STD,
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    (directory / "open_clip_config.json").write_text(json.dumps(config))
    card = {
        "arch": WORLD_CLIP_ARCH,
        "tag": directory.name,
        "sha256": sha256 or sha256_file(directory / WEIGHTS_FILE),
    }
    (directory / "card.json").write_text(json.dumps(card))
    return directory


@pytest.fixture(scope="module")
def random_clip():
    torch.manual_seed(0)
    return create_world_clip(None)


def test_register_is_idempotent(monkeypatch):
    register_world_clip()
    calls = []
    monkeypatch.setattr(open_clip, "add_model_config", lambda path: calls.append(path))
    register_world_clip()
    register_world_clip()
    assert calls == []
    assert open_clip.list_models().count(WORLD_CLIP_ARCH) == 1


def test_open_clip_builds_the_registered_architecture():
    register_world_clip()
    torch.manual_seed(0)
    model = open_clip.create_model(WORLD_CLIP_ARCH)
    assert model.visual.output_dim == 128 and model.visual.transformer.width == 192
    assert len(model.visual.transformer.resblocks) == 4
    assert model.visual.grid_size == (8, 8)
    assert model.context_length == 32
    assert open_clip.get_tokenizer(WORLD_CLIP_ARCH)(["a red circle"]).shape == (1, 32)
    assert world_clip_tokenizer()(["x"]).shape == (1, 32)


def test_world_clip_config_is_a_copy():
    config = world_clip_config()
    config["embed_dim"] = 7
    assert world_clip_config()["embed_dim"] == 128


def test_random_world_clip(random_clip):
    assert isinstance(random_clip, open_clip.CLIP) and not random_clip.training
    torch.manual_seed(0)
    again = create_world_clip(None)
    torch.testing.assert_close(again.visual.proj, random_clip.visual.proj)  # seeded by torch's generator


def test_empty_folder_raises_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match=rf"{WEIGHTS_FILE}(.|\n)*train-clip"):
        create_world_clip(tmp_path)
    with pytest.raises(MissingFileError, match=r"card\.json(.|\n)*train-clip"):
        load_world_clip_card(tmp_path)


def test_folder_round_trip(tmp_path, random_clip):
    folder = _write_folder(tmp_path / "wclip", random_clip)
    loaded = create_world_clip(folder)
    assert not loaded.training
    for name, value in random_clip.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, msg=name)
    assert list(loaded.visual.preprocess_cfg["mean"]) == FOLDER_MEAN  # preprocessing travels with weights
    assert list(loaded.visual.preprocess_cfg["std"]) == FOLDER_STD
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(images), random_clip.encode_image(images))
    assert load_world_clip_card(folder)["sha256"] == sha256_file(folder / WEIGHTS_FILE)


def test_sha256_mismatch_raises_data_format_error(tmp_path, random_clip):
    folder = _write_folder(tmp_path / "wclip", random_clip, sha256="0" * 64)
    with pytest.raises(
        DataFormatError, match=r"open_clip_model\.safetensors: sha256 does not match card\.json"
    ):
        create_world_clip(folder)
    assert isinstance(create_world_clip(folder, verify=False), open_clip.CLIP)  # opt-out is explicit


def test_weights_without_card_raise_missing_file(tmp_path, random_clip):
    folder = _write_folder(tmp_path / "wclip", random_clip)
    (folder / "card.json").unlink()
    with pytest.raises(MissingFileError, match=r"card\.json"):
        create_world_clip(folder)


def test_sha256_file(tmp_path):
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 10_000  # more than one 1 MiB block
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_encode_texts_are_normalised(random_clip):
    texts = [f"a picture of a circle number {i}" for i in range(5)]
    embeddings = encode_texts(random_clip, texts, batch_size=2)
    assert embeddings.shape == (5, 128)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(embeddings, encode_texts(random_clip, texts))


def test_shipped_folder_layout_constants():
    assert world_clip.WORLD_CLIP_DIR.name == "world-clip-v1"
    assert (world_clip.MODEL_CONFIG_DIR / "world-clip.json").is_file()


def test_shipped_v2_meets_its_targets_against_v1_in_the_same_run():
    """World CLIP v2's targets, re-measured here on held-out scenes (not read from the cards).

    At least 3x v1's 57-way zero-shot accuracy and 1.5x its 500-way image->caption top-1.
    """
    from brainbench.backbones.world_clip import world_clip_dir
    from brainbench.world.train_clip import evaluate_world_clip

    scores = {
        tag: evaluate_world_clip(create_world_clip(world_clip_dir(tag)), n_pairs=500, n_zero_shot=300)
        for tag in ("v1", "v2")
    }
    v1, v2 = scores["v1"], scores["v2"]
    assert v1["zero_shot_top1_57way"] > v1["chance_zero_shot"]
    assert v2["zero_shot_top1_57way"] >= 3 * v1["zero_shot_top1_57way"]
    assert v2["image2caption_top1_500way"] >= 1.5 * v1["image2caption_top1_500way"]
