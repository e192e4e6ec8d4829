"""Wills Aligner: router shapes and usage, experts start as the identity, what each stage trains, the losses,
the stage cache, the real-scale parameter count, and one tiny-world end-to-end run (slow)."""

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from bench_helpers import tiny_config, tiny_request
from pretrain_helpers import BatchDataModule, assert_pretrained_once_then_reused, quiet_trainer

from brainbench.errors import ConfigError
from brainbench.methods import load_method_config
from brainbench.methods.losses import soft_clip_loss
from brainbench.methods.willsaligner import (
    STAGES_FILE,
    WillsAligner,
    importance_balance,
    router_usage,
    semantic_relation_loss,
)

SHAPES = {"clip_tokens": (3, 8), "clip_image": (8,)}
TINY = {"hidden": 16, "n_blocks": 2, "n_experts": 4, "expert_rank": 4, "subject_dim": 4, "block_dropout": 0.0}


def tiny_model(seed=0, n_voxels=40, **overrides):
    torch.manual_seed(seed)
    return WillsAligner(n_voxels, SHAPES, **(TINY | overrides))


def fake_batch(n=8, n_voxels=40, seed=1, subject=1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(n, 3, 8, generator=g)
    return {
        "voxels": torch.randn(n, n_voxels, generator=g),
        "clip_tokens": tokens,
        "clip_image": tokens[:, 0],
        "stim_id": torch.arange(n) + 100 * subject,
        "subject": torch.full((n,), subject, dtype=torch.long),
    }


class FakeManifest:
    def __init__(self, subject):
        self.subject = subject


def FakeDataModule(n_voxels, seed, subject, n=24, batch_size=8):  # noqa: N802 - reads like the class it stands for
    """One subject's ``n`` trials, with the manifest's subject number the method reads."""
    return BatchDataModule(fake_batch(n, n_voxels, seed, subject), batch_size, FakeManifest(subject))


make_trainer = quiet_trainer


@pytest.mark.parametrize(("router_input", "top_k"), [("both", 0), ("hidden", 2), ("subject", 1)])
def test_router_shapes_and_top_k(router_input, top_k):
    model = tiny_model(router_input=router_input, top_k=top_k)
    torch.nn.init.normal_(model.router.weight)
    weights = model.route(torch.randn(6, 16), torch.tensor([1, 1, 2, 2, 5, 5]))
    assert weights.shape == (6, 4)
    torch.testing.assert_close(weights.sum(1), torch.ones(6))
    assert ((weights > 0).sum(1) == (top_k or 4)).all()


def test_router_usage_reports_entropy_and_per_subject_weights():
    uniform = router_usage(torch.full((10, 4), 0.25))
    assert uniform["entropy_bits"] == pytest.approx(2.0)
    assert uniform["sample_entropy_bits"] == pytest.approx(2.0)
    one_hot = router_usage(F.one_hot(torch.tensor([2] * 5), 4).float())
    assert one_hot["entropy_bits"] == pytest.approx(0.0) and one_hot["mean_weights"] == [0, 0, 1, 0]
    split = router_usage(F.one_hot(torch.tensor([0, 1] * 5), 4).float())
    assert split["entropy_bits"] == pytest.approx(1.0) and split["sample_entropy_bits"] == pytest.approx(0.0)
    assert importance_balance(torch.full((10, 4), 0.25)) == pytest.approx(0.0)
    assert importance_balance(F.one_hot(torch.tensor([2] * 5), 4).float()) > 1


def test_experts_start_as_the_identity_and_only_stage1_skips_them():
    model = tiny_model().eval()
    voxels = torch.randn(5, 40)
    h0 = model.input(voxels)
    with_experts, weights = model.backbone(h0, torch.ones(5, dtype=torch.long), experts=True)
    without, none = model.backbone(h0, torch.ones(5, dtype=torch.long), experts=False)
    torch.testing.assert_close(with_experts, without)  # U = 0 at init
    assert weights.shape == (5, 4) and none is None
    torch.testing.assert_close(weights, torch.full((5, 4), 0.25))  # zero router: uniform at init
    out = model(voxels)
    assert out["clip_tokens"].shape == (5, 3, 8) and torch.equal(out["clip_image"], out["clip_tokens"][:, 0])


def test_semantic_relation_loss_pulls_toward_semantic_neighbours():
    """Soft targets from the stimuli's image embeddings: with a sharp temperature it is CLIP's loss on
    distinct images; two images with the same embedding share their target mass."""
    g = torch.Generator().manual_seed(0)
    target = F.normalize(torch.randn(6, 10, generator=g), dim=-1)
    semantic = torch.eye(6)
    loss_sharp = semantic_relation_loss(target, target, semantic, temp=0.1, semantic_temp=1e-3)
    logits = target @ target.T / 0.1
    hard = (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.T, torch.arange(6))) / 2
    torch.testing.assert_close(loss_sharp, hard)
    semantic[1] = semantic[0]  # stimuli 0 and 1 are semantically the same
    pred_swap = target.clone()
    pred_swap[[0, 1]] = target[[1, 0]]
    swapped = semantic_relation_loss(pred_swap, target, semantic, 0.1, 1e-3)
    unrelated = target.clone()
    unrelated[[0, 2]] = target[[2, 0]]
    assert swapped < semantic_relation_loss(unrelated, target, semantic, 0.1, 1e-3)
    # with targets as their own semantics it is MindEye's SoftCLIP
    torch.testing.assert_close(
        semantic_relation_loss(target, target, target, 0.1, 0.1), soft_clip_loss(target, target, 0.1)
    )


def test_loss_decreases_on_a_fixed_batch():
    model = tiny_model(semantic_weight=0.5)
    batch = fake_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        terms, _ = model.loss_terms(batch, "train")
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(terms["loss"].item())
    assert {"contrastive", "semantic", "balance"} <= set(terms)
    assert losses[-1] < 0.5 * losses[0]


def test_stages_train_what_they_should_and_cache_is_reused(tmp_path, caplog):
    datamodules = {2: FakeDataModule(40, seed=2, subject=2), 5: FakeDataModule(40, seed=5, subject=5)}
    model = tiny_model(stage1_epochs=2, stage2_epochs=2, pretrain_max_lr=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    snapshots = {}
    original_fit = L.Trainer.fit

    def spy_fit(trainer, module, *args, **kwargs):
        original_fit(trainer, module, *args, **kwargs)
        snapshots[module.stage] = {k: v.clone() for k, v in model.state_dict().items()}

    L.Trainer.fit = spy_fit
    try:
        model.pretrain(datamodules, make_trainer, tmp_path / "cache")
    finally:
        L.Trainer.fit = original_fit
    s1, s2 = snapshots["stage1"], snapshots["stage2"]
    assert not torch.equal(s1["blocks.0.linear.base.weight"], before["blocks.0.linear.base.weight"])
    assert not torch.equal(s1["input.weight"], before["input.weight"])
    assert torch.equal(s1["experts.0.0.up.weight"], before["experts.0.0.up.weight"])  # stage 1: no experts
    assert torch.equal(s1["router.weight"], before["router.weight"])
    # stage 2: backbone frozen, plug-in trained
    assert torch.equal(s2["blocks.0.linear.base.weight"], s1["blocks.0.linear.base.weight"])
    assert torch.equal(s2["input.weight"], s1["input.weight"])
    assert not torch.equal(s2["experts.0.0.up.weight"], s1["experts.0.0.up.weight"])
    assert not torch.equal(s2["router.weight"], s1["router.weight"])
    record = (tmp_path / "cache" / STAGES_FILE).with_suffix(".json").read_text()
    assert '"stage1"' in record and '"stage2"' in record and "entropy_bits" in record

    caplog.set_level("INFO", logger="brainbench")

    def no_training(name, max_epochs):
        raise AssertionError("pre-training ran again instead of reusing the cache")

    again = tiny_model(seed=3, stage1_epochs=2, stage2_epochs=2, pretrain_max_lr=1e-2)
    again.pretrain(datamodules, no_training, tmp_path / "cache")
    assert "reused stage 1 + 2" in caplog.text
    torch.testing.assert_close(again.router.weight, model.router.weight, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="does not fit"):
        tiny_model(expert_rank=5).pretrain(datamodules, no_training, tmp_path / "cache")

    # a plug-in variant (K = 1) in its own cache folder reuses stage 1 and trains only stage 2
    fits = []

    def stage2_only(name, max_epochs):
        fits.append(name)
        return make_trainer(name, max_epochs)

    k1 = tiny_model(n_experts=1, stage1_epochs=2, stage2_epochs=2, pretrain_max_lr=1e-2)
    caplog.clear()
    k1.pretrain(datamodules, stage2_only, tmp_path / "cache-k1")
    assert fits == ["pretrain-stage2"] and "reused stage 1" in caplog.text
    torch.testing.assert_close(
        k1.blocks[0].linear.base.weight, s1["blocks.0.linear.base.weight"], rtol=0, atol=0
    )
    torch.testing.assert_close(k1.head.weight, s1["head.weight"], rtol=0, atol=0)
    other = tiny_model(stage1_epochs=3, stage2_epochs=1)  # another stage-1 budget: its own stage 1
    fits.clear()
    other.pretrain(datamodules, stage2_only, tmp_path / "cache-3")
    assert fits == ["pretrain-stage1", "pretrain-stage2"]


def test_fit_after_pretraining_starts_new_subject_at_mean_embedding_and_slows_backbone(tmp_path):
    model = tiny_model(stage1_epochs=1, stage2_epochs=1, adapt_backbone_lr_scale=0.0)
    model.pretrain({2: FakeDataModule(40, 2, 2), 5: FakeDataModule(40, 5, 5)}, make_trainer, tmp_path)
    mean = model.subject_embedding.weight[[2, 5]].mean(0).clone()
    backbone = model.blocks[0].linear.base.weight.clone()
    captured = {}
    original = WillsAligner.on_train_start

    def capture(self):
        captured["embedding"] = self.subject_embedding.weight[1].clone()
        original(self)

    WillsAligner.on_train_start = capture
    try:
        model.fit(make_trainer("fit", 2), FakeDataModule(40, 1, 1))
    finally:
        WillsAligner.on_train_start = original
    torch.testing.assert_close(captured["embedding"], mean)
    assert int(model.subject_id) == 1
    assert torch.equal(model.blocks[0].linear.base.weight, backbone)  # lr factor 0: frozen
    assert not torch.equal(model.subject_embedding.weight[1], mean)


def test_shared_input_layer_needs_template_space_data(tmp_path):
    model = tiny_model()
    with pytest.raises(ConfigError, match="data.space: template"):
        model.pretrain({2: FakeDataModule(41, 2, 2)}, make_trainer, tmp_path)
    native = tiny_model(input_layer="per_subject", stage1_epochs=1, stage2_epochs=1)
    native.pretrain({2: FakeDataModule(41, 2, 2), 5: FakeDataModule(37, 5, 5)}, make_trainer, tmp_path / "n")
    assert not any(k.startswith("input.") for k in native.shared_state())


def test_save_load_round_trip(tmp_path):
    model = tiny_model().eval()
    model.subject_id.fill_(3)
    with torch.no_grad():
        model.experts[0][1].up.weight.normal_()
        model.router.weight.normal_()
    model.save_pretrained(tmp_path / "model")
    loaded = WillsAligner.load_pretrained(tmp_path / "model", n_voxels=40)
    voxels = torch.randn(3, 40)
    for key, value in model(voxels).items():
        torch.testing.assert_close(loaded(voxels)[key], value, rtol=0, atol=0)


def test_nsd_config_parameter_count_on_meta_device():
    config = load_method_config("willsaligner", "nsd")
    init = config["model"]["init_args"]
    assert config["data"]["space"] == "template" and init["input_layer"] == "shared"
    n_voxels = 91_703
    with torch.device("meta"):
        model = WillsAligner(n_voxels, {"clip_tokens": (257, 768), "clip_image": (768,)}, **init)
    h, r, k, b, td = init["hidden"], init["expert_rank"], init["n_experts"], init["n_blocks"], 257 * 768
    blocks = b * ((h + 1) * h + 2 * h)
    experts = b * k * ((h + 1) * r + (r + 1) * h)
    router = (h + init["subject_dim"] + 1) * k
    expected = (n_voxels + 1) * h + blocks + (h + 1) * td + experts + router + 64 * init["subject_dim"]
    assert model.n_parameters() == expected


@pytest.mark.slow
def test_tiny_world_end_to_end(tmp_path: Path) -> None:
    """Tiny world through ``run_bench``: stages 1-2 on subject 2 in template space, subject 1, then reuse."""
    from brainbench.bench import run_bench

    init_args = {"hidden": 32, "expert_rank": 8, "stage1_epochs": 2, "stage2_epochs": 1}
    data = {"batch_size": 16, "shuffle_buffer": 500}
    config = tiny_config(
        tmp_path, "willsaligner", epochs=2, init_args=init_args, data=data, pretrain={"subjects": [2]}
    )
    request = tiny_request(tmp_path, "willsaligner", config=config, val_fraction=None)
    row, result = run_bench(request)
    top1 = [k for k in result.values if "top1" in k and "clip_tokens" in k]
    assert top1 and all(0 <= result.values[k] <= 1 for k in top1)
    prepared = tmp_path / "home" / "prepared"
    assert len(list(prepared.glob("*/subj0[12]/template.npz"))) == 2
    assert_pretrained_once_then_reused(tmp_path / "home", STAGES_FILE, lambda: run_bench(request))

    from brainbench.world.config import get_world_config
    from brainbench.world.templates import alignment_report

    world = next((tmp_path / "home" / "worlds").glob("world-nsd-*"))
    report = alignment_report(world, get_world_config("tiny"), [1, 2])
    nsdgeneral = report["roi_dice"]["nsdgeneral/1"]
    assert nsdgeneral["aligned"] > 0.8 and nsdgeneral["aligned"] >= nsdgeneral["unaligned"]
    assert (
        report["signal_r2"]["low"] > report["signal_r2"]["mid"]
    )  # retinotopy follows anatomy, tunings do not
