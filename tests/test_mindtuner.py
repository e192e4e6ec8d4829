"""MindTuner: LoRA / Skip-LoRA identity at init, what trains, the pivot, the pre-training cache, save/load.

Reference: shared/reference/methods.md §6 (subject ridge + LoRA + non-linear Skip-LoRA on a frozen
multi-subject backbone, a frozen image->text pivot) and §7 (the MindEye2 stack). Tiny shapes throughout;
the tiny-world end-to-end run is marked slow.
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from bench_helpers import tiny_config, tiny_request
from pretrain_helpers import BatchDataModule, assert_pretrained_once_then_reused, quiet_trainer
from safetensors.torch import load_file

from brainbench.errors import ConfigError
from brainbench.methods import load_method_config
from brainbench.methods.losses import mixco_nce
from brainbench.methods.mindtuner import SHARED_FILE, LoRALinear, MindTuner, SkipLoRA

SHAPES = {"clip_tokens": (3, 8), "clip_image": (8,), "clip_text": (6,)}
TINY = {"hidden": 16, "n_blocks": 3, "proj_hidden": 12, "lora_rank": 2, "skip_rank": 2, "block_dropout": 0.0}


def tiny_model(seed=0, n_voxels=40, **overrides):
    torch.manual_seed(seed)
    return MindTuner(n_voxels, SHAPES, **(TINY | overrides))


def fake_batch(n=8, n_voxels=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(n, 3, 8, generator=g)
    return {
        "voxels": torch.randn(n, n_voxels, generator=g),
        "clip_tokens": tokens,
        "clip_image": tokens[:, 0],
        "clip_text": F.normalize(torch.randn(n, 6, generator=g), dim=-1),
        "stim_id": torch.arange(n),
        "subject": torch.ones(n, dtype=torch.long),
    }


def FakeDataModule(n_voxels, seed, n=24, batch_size=8):  # noqa: N802 - reads like the class it stands for
    """A subject with ``n`` training trials: what ``pretrain`` needs (``n_voxels``, train/val loaders)."""
    return BatchDataModule(fake_batch(n, n_voxels, seed), batch_size)


make_trainer = quiet_trainer


def test_forward_shapes_and_skip_placement():
    model = tiny_model(skip_lora=[[0, -1], [1, 2]]).eval()
    out = model(torch.randn(5, 40))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "clip_tokens": (5, 3, 8),
        "clip_image": (5, 8),
        "clip_text": (5, 6),
    }
    torch.testing.assert_close(out["clip_image"], out["clip_tokens"][:, 0])
    assert [(s.source, s.target) for s in model.skip_loras] == [(0, 3), (1, 2)]
    assert isinstance(model.blocks[0].linear, LoRALinear) and model.blocks[0].linear.lora_a.shape == (2, 16)
    assert model.head.lora_b.shape == (24, 2) and model.projector[2].rank == 0  # projector not targeted
    with pytest.raises(ConfigError, match="later one"):
        tiny_model(skip_lora=[[2, 1]])
    with pytest.raises(ConfigError, match="lora_targets"):
        tiny_model(lora_targets=["ridge"])


def test_adapted_model_equals_frozen_one_at_init():
    model = tiny_model(lora_targets=["blocks", "head", "projector"], skip_lora=[[0, -1], [1, 2]]).eval()
    plain = tiny_model(seed=5, lora_rank=0, skip_lora=[]).eval()
    plain.load_state_dict(
        {**model.shared_state(), **{k: v for k, v in model.state_dict().items() if "ridge" in k}}
    )
    voxels = torch.randn(4, 40)
    torch.testing.assert_close(model(voxels)["clip_tokens"], plain(voxels)["clip_tokens"], rtol=0, atol=0)
    with torch.no_grad():  # once B moves, the adapters change the output (the comparison above can fail)
        model.skip_loras[1].up.weight.normal_()
    assert not torch.allclose(model(voxels)["clip_tokens"], plain(voxels)["clip_tokens"])


def test_lora_linear_and_skip_lora_are_low_rank():
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(10, 7), rank=3, alpha=6.0)
    torch.nn.init.normal_(layer.lora_b)
    x = torch.randn(4, 10)
    delta = layer(x) - layer.base(x)
    torch.testing.assert_close(delta, 2.0 * x @ layer.lora_a.T @ layer.lora_b.T)
    assert torch.linalg.matrix_rank(layer.lora_b @ layer.lora_a) == 3
    skip = SkipLoRA(10, rank=2, alpha=2.0, source=0, target=1)
    torch.nn.init.normal_(skip.up.weight)
    torch.testing.assert_close(skip(x), F.gelu(x @ skip.down.weight.T) @ skip.up.weight.T)
    # non-linear: the branch of a sum is not the sum of the branches
    assert not torch.allclose(skip(x[:1] + x[1:2]), skip(x[:1]) + skip(x[1:2]), atol=1e-4)


@pytest.mark.parametrize(
    ("mode", "train_projector", "trained"),
    [
        ("finetune", True, {"ridge", "adapters", "projector"}),
        ("finetune", False, {"ridge", "adapters"}),
        ("scratch", True, {"ridge", "adapters", "projector", "shared"}),
        ("pretrain", True, {"shared", "projector"}),
    ],
)
def test_only_intended_parameters_get_gradients(mode, train_projector, trained):
    model = tiny_model(train_projector=train_projector, lora_targets=["blocks", "head"])
    with torch.no_grad():  # non-zero B so the A factors get gradients too
        for name, param in model.named_parameters():
            if "lora_b" in name or "up.weight" in name:
                param.normal_(std=0.1)
    model.set_trainable(mode)
    batch = fake_batch()
    total, _, _ = model.loss(model(batch["voxels"]), batch, epoch=100, n_epochs=150)
    total.backward()
    for role, params in model.parameter_groups().items():
        for param in params:
            has_grad = param.grad is not None and param.grad.abs().sum() > 0
            assert has_grad == (role in trained), (mode, role, param.shape)
    assert len(model.parameter_groups()["shared"]) == 3 * 4 + 2  # blocks (W, b, LN w, LN b) and head (W, b)


def test_finetuning_leaves_shared_weights_untouched():
    model = tiny_model()
    model.pretrained_from = "fake"
    before = {k: v.clone() for k, v in model.shared_state().items()}
    model.set_trainable("finetune")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = fake_batch()
    for _ in range(3):
        optimizer.zero_grad()
        model.loss(model(batch["voxels"]), batch, epoch=100, n_epochs=150)[0].backward()
        optimizer.step()
    after = model.shared_state()
    for key in before:
        changed = not torch.equal(before[key], after[key])
        assert changed == key.startswith("projector."), key


def test_pivot_is_closed_form_ridge():
    model = tiny_model(pivot_alpha=1e-6)
    torch.manual_seed(0)
    images = torch.randn(200, 8)
    weight, bias = torch.randn(8, 6), torch.randn(6)
    texts = F.normalize(images, dim=-1) @ weight + bias
    model.fit_pivot(images, texts)
    torch.testing.assert_close(model.pivot_weight, weight, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.pivot(images * 3.0), texts, atol=1e-4, rtol=1e-4)  # scale-free input
    out = model(torch.randn(2, 40))
    torch.testing.assert_close(out["clip_text"], model.pivot(out["clip_image"]))


def test_text_loss_goes_through_the_pivot():
    model = tiny_model(text_weight=0.5)
    model.fit_pivot(torch.randn(50, 8), torch.randn(50, 6))
    batch = fake_batch()
    out = model(batch["voxels"])
    total, image, text = model.loss(
        out, batch, epoch=0, n_epochs=150
    )  # a BiMixCo epoch without mixing: InfoNCE
    b = F.normalize(model.pivot(out["clip_tokens"][:, 0]), dim=-1)
    torch.testing.assert_close(text, mixco_nce(b, F.normalize(batch["clip_text"], dim=-1), 0.006))
    torch.testing.assert_close(total, image + 0.5 * text)
    assert (
        model.loss(out, batch, epoch=0, n_epochs=150)[0]
        != tiny_model(text_weight=0.0).loss(out, batch, epoch=0, n_epochs=150)[0]
    )


@pytest.mark.parametrize("epoch", [0, 120])  # a BiMixCo epoch and a SoftCLIP epoch
def test_loss_decreases_on_a_fixed_batch(epoch):
    model = tiny_model()
    model.fit_pivot(torch.randn(50, 8), torch.randn(50, 6))
    model.pretrained_from = "fake"
    model.set_trainable("finetune")
    batch = fake_batch()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(40):
        total = model.loss(model(batch["voxels"]), batch, epoch, 150)[0]
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(total.item())
    assert losses[-1] < 0.5 * losses[0]


def test_pretrain_saves_to_and_reuses_cache_dir(tmp_path, caplog):
    datamodules = {2: FakeDataModule(30, seed=2), 5: FakeDataModule(35, seed=5)}
    model = tiny_model(pretrain_epochs=2, pretrain_max_lr=1e-2)
    init = {k: v.clone() for k, v in model.shared_state().items()}
    model.pretrain(datamodules, make_trainer, tmp_path / "cache")
    saved = load_file(tmp_path / "cache" / SHARED_FILE)
    assert set(saved) == set(init) and not any("ridge" in k or "lora_" in k for k in saved)
    assert not torch.equal(saved["blocks.0.linear.base.weight"], init["blocks.0.linear.base.weight"])
    assert saved["pivot_weight"].abs().sum() > 0  # the pivot was fit on the pre-training stimuli
    assert all((p == 0).all() for n, p in model.named_parameters() if "lora_b" in n)  # adapters stayed frozen
    assert model.pretrained_from == str(tmp_path / "cache" / SHARED_FILE)

    def no_training(name, max_epochs):
        raise AssertionError("pre-training ran again instead of reusing the cache")

    again = tiny_model(seed=9, pretrain_epochs=2)
    caplog.clear()
    caplog.set_level("INFO", logger="brainbench")
    again.pretrain(datamodules, no_training, tmp_path / "cache")
    assert "reused pre-trained shared weights" in caplog.text
    for key, value in again.shared_state().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)
    with pytest.raises(ConfigError, match="does not fit"):
        tiny_model(hidden=20).pretrain(datamodules, no_training, tmp_path / "cache")


def test_fit_freezes_shared_weights_after_pretraining(tmp_path):
    subject = FakeDataModule(40, seed=1)
    model = tiny_model(pretrain_epochs=1)
    model.pretrain({2: FakeDataModule(30, seed=2)}, make_trainer, tmp_path)
    shared = {k: v.clone() for k, v in model.shared_state().items()}
    pivot = model.pivot_weight.clone()
    model.fit(make_trainer("fit", 2), subject)
    for key, value in model.shared_state().items():
        assert torch.equal(value, shared[key]) == (not key.startswith("projector.")), key
    assert torch.equal(model.pivot_weight, pivot)  # frozen pivot, not refit on the new subject
    scratch = tiny_model()
    init = {k: v.clone() for k, v in scratch.shared_state().items()}
    scratch.fit(make_trainer("fit", 2), subject)
    assert not torch.equal(scratch.shared_state()["head.base.weight"], init["head.base.weight"])
    assert scratch.pivot_weight.abs().sum() > 0  # scratch fits the pivot on the subject's own stimuli


def test_save_load_round_trip(tmp_path):
    model = tiny_model(skip_lora=[[0, 2]], lora_targets=["head", "projector"]).eval()
    model.fit_pivot(torch.randn(40, 8), torch.randn(40, 6))
    with torch.no_grad():
        model.head.lora_b.normal_()
    model.save_pretrained(tmp_path / "model")
    loaded = MindTuner.load_pretrained(tmp_path / "model", n_voxels=40)
    voxels = torch.randn(3, 40)
    for key, value in model(voxels).items():
        torch.testing.assert_close(loaded(voxels)[key], value, rtol=0, atol=0)
    assert loaded.hparams.skip_lora == [[0, 2]] or tuple(map(tuple, loaded.hparams.skip_lora)) == ((0, 2),)
    torch.save(model.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert torch.equal(state["pivot_weight"], model.pivot_weight)
    with pytest.raises(ConfigError, match="trained on 40 voxels"):
        MindTuner.load_pretrained(tmp_path / "model", n_voxels=41)


def test_nsd_config_parameter_count_on_meta_device():
    config = load_method_config("mindtuner", "nsd")
    init = config["model"]["init_args"]
    assert init["hidden"] == 4096 and init["n_blocks"] == 4 and len(config["pretrain"]["subjects"]) == 8
    with torch.device("meta"):
        model = MindTuner(
            15724, {"clip_tokens": (257, 768), "clip_image": (768,), "clip_text": (768,)}, **init
        )
    v, h, td, d, p, r = 15724, 4096, 257 * 768, 768, init["proj_hidden"], init["lora_rank"]
    shared = 4 * ((h + 1) * h + 2 * h) + (h + 1) * td
    projector = 2 * d + 4 * p + (d + 1) * p + (p + 1) * p + (p + 1) * d
    adapters = 4 * r * 2 * h + r * (h + td) + len(init["skip_lora"]) * 2 * init["skip_rank"] * h
    assert model.n_parameters() == (v + 1) * h + shared + projector + adapters + 0  # pivot is a buffer
    groups = {k: sum(q.numel() for q in g) for k, g in model.parameter_groups().items()}
    assert groups["adapters"] == adapters and groups["ridge"] == (v + 1) * h


@pytest.mark.slow
def test_tiny_world_end_to_end(tmp_path: Path) -> None:
    """Tiny world through ``run_bench``: pre-training on subject 2, one session of subject 1, then reuse."""
    from brainbench.bench import run_bench

    init_args = {"hidden": 32, "proj_hidden": 16, "pretrain_epochs": 2}
    data = {"batch_size": 16, "shuffle_buffer": 500}
    config = tiny_config(
        tmp_path, "mindtuner", epochs=3, init_args=init_args, data=data, pretrain={"subjects": [2]}
    )
    request = tiny_request(tmp_path, "mindtuner", config=config, val_fraction=None)
    row, result = run_bench(request)
    b2t = [k for k in result.values if "b2t" in k or "text" in k]
    assert b2t and all(0 <= result.values[k] <= 1 for k in b2t if "top" in k)
    assert_pretrained_once_then_reused(tmp_path / "home", SHARED_FILE, lambda: run_bench(request))
