"""MLIP (Zhang et al. 2024, arXiv 2406.01460): token merging, frequency stage, token loss, train-clip."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from brainbench.backbones.mlip import (
    FrequencyStage,
    MLIPConfig,
    MLIPModel,
    encode_image_mlip,
    encode_text_tokens,
    merge_tokens,
    merged_token_count,
    patch_high_frequency_energy,
)
from brainbench.backbones.mlip_loss import clip_loss, mlip_loss, token_alignment_loss, token_similarities
from brainbench.backbones.world_clip import WEIGHTS_FILE, create_world_clip, sha256_file, world_clip_tokenizer
from brainbench.cli import main
from brainbench.world.clip_pairs import load_pair_pool, render_group


@pytest.fixture(scope="module")
def random_clip():
    torch.manual_seed(0)
    return create_world_clip(None)


def test_merge_rate_sets_the_token_count(random_clip):
    images = torch.randn(2, 3, 64, 64)
    for rate, expected in [(0.0, 64), (0.25, 36), (0.5, 16)]:
        assert merged_token_count(64, rate, 2) == expected
        with torch.no_grad():
            _, tokens, _ = encode_image_mlip(random_clip.visual, images, MLIPConfig(merge_rate=rate))
        assert tokens.shape == (2, expected, 128)
    # merging after the last block would not save anything: it is skipped
    with torch.no_grad():
        _, tokens, _ = encode_image_mlip(
            random_clip.visual, images, MLIPConfig(merge_rate=0.5, merge_layers=(4,))
        )
    assert tokens.shape[1] == 64


def test_merged_token_is_the_size_weighted_mean():
    x = torch.tensor([[[2.0, 0.0], [1.0, 0.1], [0.0, 3.0], [0.1, 1.0]]])
    size = torch.tensor([[[3.0], [1.0], [1.0], [2.0]]])
    importance = torch.tensor([[0.9, 0.1, 0.8, 0.2]])  # tokens 1 and 3 go; 1 joins 0, 3 joins 2
    extra = torch.tensor([[1.0, 5.0, 2.0, 8.0]])
    merged, new_size, new_extra = merge_tokens(x, size, importance, n_merge=2, extra=extra)
    torch.testing.assert_close(merged[0, 0], (3 * x[0, 0] + 1 * x[0, 1]) / 4)
    torch.testing.assert_close(merged[0, 1], (1 * x[0, 2] + 2 * x[0, 3]) / 3)
    torch.testing.assert_close(new_size.flatten(), torch.tensor([4.0, 3.0]))
    torch.testing.assert_close(new_extra, torch.tensor([[(3 + 5) / 4, (2 + 16) / 3]]))
    with pytest.raises(ValueError, match="cannot merge"):
        merge_tokens(x, size, importance, n_merge=4)


def test_no_merging_reproduces_open_clip(random_clip):
    images = torch.randn(3, 3, 64, 64)
    text = world_clip_tokenizer()(
        ["a red circle", "two objects: a star and a key", "a picture of a cat face"]
    )
    with torch.no_grad():
        pooled, tokens, grid = encode_image_mlip(random_clip.visual, images, MLIPConfig())
        torch.testing.assert_close(pooled, random_clip.visual(images), atol=1e-5, rtol=1e-5)
        text_pooled, text_tokens, mask = encode_text_tokens(random_clip, text)
        torch.testing.assert_close(text_pooled, random_clip.encode_text(text), atol=1e-5, rtol=1e-5)
    assert grid.shape == (3, 192, 8, 8) and tokens.shape == (3, 64, 128)
    assert text_tokens.shape == (3, 32, 128)
    # start token out; words and the end token in
    assert not mask[:, 0].any() and mask[0].sum() == 4


def test_frequency_stage_shapes_and_gradient():
    stage = FrequencyStage(width=16, grid=8, embed_dim=12, heads=2, layers=1)
    grid = torch.randn(5, 16, 8, 8, requires_grad=True)
    pooled, tokens = stage(grid)
    assert pooled.shape == (5, 12) and tokens.shape == (5, 8 * 5, 12)
    pooled.sum().backward()
    assert grid.grad is not None and grid.grad.abs().sum() > 0


def test_high_frequency_energy_sees_texture_not_flat_patches():
    images = torch.zeros(1, 3, 16, 16)
    images[0, :, :8, :8] = 0.7  # flat patch: only a DC term
    yy, xx = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    images[0, :, 8:, 8:] = ((xx + yy) % 2).float()  # checkerboard: the highest frequency
    energy = patch_high_frequency_energy(images, 8)
    assert energy.shape == (1, 4)
    assert energy[0, 0] == pytest.approx(0.0, abs=1e-6) and energy[0, 1] == pytest.approx(0.0, abs=1e-6)
    assert energy[0, 3] > 1.0


def test_token_loss_on_a_hand_computed_case():
    image = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    text = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]])
    mask = torch.tensor([[True, False], [True, True]])  # text 0's second token is padding
    image_to_text, text_to_image = token_similarities(image, text, mask)
    torch.testing.assert_close(image_to_text, torch.eye(2))
    torch.testing.assert_close(text_to_image, torch.eye(2))
    # both directions: cross-entropy of logits (1, 0) on the right pair = log(1 + e^-1)
    loss = token_alignment_loss(image, text, mask, torch.tensor(1.0))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    # without the mask, text 0's padding token would match image 1: the loss changes
    loose = token_alignment_loss(image, text, torch.ones(2, 2, dtype=torch.bool), torch.tensor(1.0))
    assert loose.item() != pytest.approx(loss.item(), abs=1e-3)


def test_mlip_loss_drops_switched_off_parts(random_clip):
    images = torch.randn(4, 3, 64, 64)
    text = world_clip_tokenizer()(["a red circle", "a blue star", "a key", "a green cup"])
    full = mlip_loss(MLIPModel(random_clip, MLIPConfig())(images, text), MLIPConfig())
    assert set(full) == {"loss", "clip", "frequency", "token_spatial", "token_frequency"}
    expected = full["clip"] + 0.5 * (full["frequency"] + full["token_spatial"] + full["token_frequency"])
    torch.testing.assert_close(full["loss"], expected)
    no_parts = MLIPConfig(frequency=False, token_align=False)
    out = MLIPModel(random_clip, no_parts)(images, text)
    terms = mlip_loss(out, no_parts)
    assert set(terms) == {"loss", "clip"}
    torch.testing.assert_close(terms["loss"], clip_loss(out["image"], out["text"], out["logit_scale"]))


def test_pair_pool_groups_share_layout_and_differ_in_category(tmp_path):
    members = render_group(seed=11, group=3, group_size=4, image_size=32)
    assert len(members) == 4 and all(len(captions) >= 1 for _, captions in members)
    pool = load_pair_pool(tmp_path, seed=11, n_pairs=16, group_size=4, image_size=32)
    again = load_pair_pool(tmp_path, seed=11, n_pairs=16, group_size=4, image_size=32)  # from the cache
    assert pool.images.shape == (16, 3, 32, 32) and pool.n_groups == 4
    torch.testing.assert_close(pool.images, again.images)
    np.testing.assert_array_equal(
        pool.images[12:].permute(0, 2, 3, 1).numpy(), np.stack([m[0] for m in members])
    )
    assert pool.subset(0.5).n_groups == 2 and pool.subset(0.25).images.shape[0] == 4
    images, captions = pool.batch(np.random.default_rng(0), 8)
    assert images.shape[0] == 8 and len(captions) == 8


def test_train_clip_mlip_runs_on_tiny_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINBENCH_HOME", str(tmp_path / "home"))
    out = tmp_path / "mlip"
    argv = ["world", "train-clip", "--out", str(out), "--objective", "mlip", "--steps", "20"]
    argv += ["--batch-size", "8", "--pool-pairs", "32", "--group-size", "4", "--merge-rate", "0.25"]
    argv += ["--warmup", "2", "--eval-pairs", "16", "--eval-zero-shot", "16", "--token-batch", "4"]
    assert main(argv) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["objective"] == "mlip" and card["steps"] == 20 and card["mlip"]["merge_rate"] == 0.25
    assert card["sha256"] == sha256_file(out / WEIGHTS_FILE)
    assert card["frequency_sha256"] == sha256_file(out / "mlip_frequency.safetensors")
    assert 0.0 <= card["held_out"]["image2caption_top1_16way"] <= 1.0
    assert "--objective mlip" in card["command"]
    trained = create_world_clip(out)  # an ordinary open_clip local-dir, sha256-checked
    torch.manual_seed(0)  # train-clip's --seed 0 initialisation
    initial = create_world_clip(None)
    assert (trained.visual.proj - initial.visual.proj).abs().max() > 1e-3  # 20 steps moved it
    assert set(load_file(out / "mlip_frequency.safetensors")) >= {"embed.weight", "proj"}


@pytest.mark.parametrize("objective", ["clip", "mlip"])
def test_train_clip_in_bf16_checkpoints_under_a_time_budget_and_resumes(tmp_path, monkeypatch, objective):
    from brainbench.world.train_clip import train_world_clip

    monkeypatch.setenv("BRAINBENCH_HOME", str(tmp_path / "home"))
    out = tmp_path / objective
    common = dict(
        batch_size=8,
        warmup=1,
        pool_pairs=16,
        group_size=4,
        eval_pairs=8,
        eval_zero_shot=8,
        minutes=10.0,
        objective=objective,
        mlip=MLIPConfig(token_batch=4),
        precision="bf16",
        checkpoint_every=2,
    )
    real_save = torch.save
    saved_steps = []

    def interrupt_after_first_checkpoint(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        saved_steps.append(obj["step"])
        raise KeyboardInterrupt  # the run dies right after its first checkpoint

    monkeypatch.setattr(torch, "save", interrupt_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_world_clip(out, steps=4, **common)
    assert saved_steps == [2] and (out / "train_state.pt").is_file()
    monkeypatch.setattr(torch, "save", real_save)
    card = train_world_clip(out, steps=4, **common)  # resumes at step 2 with the time already spent
    assert card["steps"] == 4 and card["precision"] == "bf16"
    assert not (out / "train_state.pt").exists()
    assert all(np.isfinite(v) for v in card["held_out"].values())


@pytest.mark.parametrize("tag", ["v2", "v2-mlip"])
def test_shipped_v2_folders_load_through_the_backbone_registry(tag):
    from brainbench.backbones.openclip import load_backbone
    from brainbench.backbones.world_clip import load_world_clip_card, world_clip_dir

    folder = world_clip_dir(tag)
    card = load_world_clip_card(folder)
    assert card["sha256"] == sha256_file(folder / WEIGHTS_FILE)  # what verified_weights checks on load
    assert card["objective"] == ("mlip" if tag == "v2-mlip" else "clip")
    assert card["held_out"]["zero_shot_top1_57way"] > card["held_out"]["chance_zero_shot"]
    backbone = load_backbone(f"world-clip:{tag}")
    assert backbone.backbone_id == f"world-clip:{tag}" and backbone.image_size == 64
    if tag == "v2-mlip":  # the frequency stage ships beside the open_clip weights, sha256-checked too
        from brainbench.world.train_clip import load_frequency_stage

        cfg = card["mlip"]
        mlip = MLIPModel(
            create_world_clip(folder), MLIPConfig(**{**cfg, "merge_layers": tuple(cfg["merge_layers"])})
        )
        load_frequency_stage(folder, mlip)
    with pytest.raises(ValueError, match="unknown world CLIP tag"):
        world_clip_dir("v3")
