"""Mind Reader: the released mapper's parameter count, padding, target clamp + normalisation, caption
selection, the three losses, the lr decay with optimizer reset, save/load. methods.md §5
(``sklin93/mind-reader`` ``fmri_clip.py::fmri_clip_res``, ``fmri_clip_utils.py``, ``nsd_utils.py``).
"""

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from bench_helpers import tiny_config, tiny_request
from torch.utils.data import DataLoader

from brainbench.errors import ConfigError
from brainbench.methods import load_method_config
from brainbench.methods.mindreader import (
    FmriClipRes,
    MindReader,
    clamp_normalise,
    contrastive_loss,
    mse_cos_loss,
    select_captions,
)

SHAPES = {"clip_image": (8,), "clip_text": (8,), "clip_captions": (3, 8)}


def tiny_model(**overrides):
    torch.manual_seed(0)
    args = {"n_voxels": 30, "target_shapes": SHAPES, "pad_to": 34, "channels": 4, "hidden": 6}
    return MindReader(**(args | overrides))


def batch(n=6, seed=1):
    gen = torch.Generator().manual_seed(seed)
    captions = torch.randn(n, 3, 8, generator=gen) * 2
    captions[::2, 2] = 0  # padding rows
    return {
        "voxels": torch.randn(n, 30, generator=gen),
        "clip_image": torch.randn(n, 8, generator=gen) * 2,
        "clip_captions": captions,
        "clip_text": F.normalize(torch.randn(n, 8, generator=gen), dim=-1),
        "stim_id": torch.arange(n),
    }


def test_nsd_scale_mapper_has_the_papers_parameter_count():
    with torch.device("meta"):
        mapper = FmriClipRes(15744, 512)
    n = sum(p.numel() for p in mapper.parameters())
    c, d, half, h = 64, 512, 7872, 128
    stem, block, out, fc = c * 4 + c, 2 * (c * c * 3 + c) + c * c + c, c * d + d, half * h + h + h + 1
    assert mapper.positions == half  # 15744 -> 7872, as released
    assert n == stem + 4 * block + out + fc == 1_156_929
    assert 1.155e6 <= n <= 1.165e6  # the paper's "1.16M"


def test_describe_nsd_uses_vit_b32_and_two_mappers():
    from brainbench.describe import describe

    info = describe("mindreader", "nsd")
    assert info["n_voxels"] == 15724 and info["target_shapes"]["clip_image"] == (512,)
    assert info["n_params"] == 2 * 1_156_929


def test_forward_shapes_and_centre_padding():
    model = tiny_model().eval()
    out = model(torch.randn(5, 30))
    assert {k: v.shape for k, v in out.items()} == {"clip_image": (5, 8), "clip_text": (5, 8)}
    torch.testing.assert_close(model.pad(torch.tensor([[1.0, 2.0, 3.0]]))[:, :7], torch.zeros(1, 7))
    odd = tiny_model(n_voxels=31).pad(torch.arange(1.0, 32.0)[None])
    assert odd.shape == (1, 34) and odd[0, 0] == 0 and odd[0, 1] == 1 and odd[0, -2:].tolist() == [0.0, 0.0]
    assert torch.equal(tiny_model(pad_to=None).pad(torch.ones(1, 30)), torch.ones(1, 30))
    with pytest.raises(ConfigError, match="pad_to=20 is shorter than the 30 voxels"):
        tiny_model(pad_to=20)


def test_clamp_then_normalise_hand_case():
    e = torch.tensor([[3.0, -4.0, 0.5, 0.0]])
    expected = torch.tensor([[1.5, -1.5, 0.5, 0.0]]) / (1.5**2 * 2 + 0.25) ** 0.5
    torch.testing.assert_close(clamp_normalise(e, 1.5), expected)
    torch.testing.assert_close(clamp_normalise(e, None), e / e.norm())
    targets = tiny_model().targets(batch(), training=False)
    assert targets["clip_image"].abs().max() <= 1 and torch.allclose(
        targets["clip_image"].norm(dim=-1), torch.ones(6)
    )


def test_caption_selection_skips_padding_rows():
    captions = torch.zeros(3, 4, 2)
    captions[0, 1] = torch.tensor([1.0, 0.0])
    captions[0, 3] = torch.tensor([0.0, 1.0])
    captions[1, 0] = torch.tensor([2.0, 2.0])
    captions[2, 2] = torch.tensor([-1.0, 5.0])
    first = select_captions(captions, "first")
    torch.testing.assert_close(first, torch.tensor([[1.0, 0.0], [2.0, 2.0], [-1.0, 5.0]]))
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([select_captions(captions, "random", gen) for _ in range(200)])
    torch.testing.assert_close(draws[:, 1:], first[1:].expand(200, 2, 2))  # a single caption: always it
    picked_second = (draws[:, 0] == torch.tensor([0.0, 1.0])).all(-1).float().mean()
    assert 0.35 < picked_second < 0.65  # uniform over sample 0's two captions, never a zero row
    assert (draws[:, 0].abs().sum(-1) > 0).all()
    captions[1] = 0
    with pytest.raises(ConfigError, match="no caption"):
        select_captions(captions, "random")


def test_training_targets_use_a_caption_validation_the_mean():
    model = tiny_model()
    b = batch()
    train = model.targets(b, training=True)["clip_text"]
    rows = clamp_normalise(b["clip_captions"], 1.5)
    hits = ((train[:, None, :] - rows).abs().sum(-1) < 1e-6) & (b["clip_captions"].abs().sum(-1) > 0)
    assert hits.any(dim=1).all()  # each training target is one of the sample's real captions
    torch.testing.assert_close(model.targets(b, training=False)["clip_text"], b["clip_text"])


def test_losses_match_their_definitions():
    torch.manual_seed(3)
    pred, target = (
        torch.randn(5, 8, dtype=torch.float64),
        F.normalize(torch.randn(5, 8, dtype=torch.float64), dim=-1),
    )
    cos = (F.normalize(pred, dim=-1) * target).sum(-1)
    mse = ((pred - target) ** 2).mean()
    torch.testing.assert_close(mse_cos_loss(pred, target, 0.6), 0.4 * mse + 0.6 * (1 - cos).mean())
    cos_loss = torch.nn.CosineEmbeddingLoss()(pred, target, torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(mse_cos_loss(pred, target, 1.0), cos_loss)
    logits = F.normalize(pred, dim=-1) @ target.T / 0.5
    rows = -torch.diagonal(logits.log_softmax(1)).mean()
    cols = -torch.diagonal(logits.log_softmax(0)).mean()
    torch.testing.assert_close(contrastive_loss(pred, target, 0.5), (rows + cols) / 2)
    model = tiny_model(loss="mse_cos_contrastive")
    expected = 0.5 * mse_cos_loss(pred, target, 0.6) + 0.5 * contrastive_loss(pred, target, 0.5)
    torch.testing.assert_close(model.mapper_loss(pred, target), expected)
    with pytest.raises(ConfigError, match="mse_cos, contrastive or mse_cos_contrastive"):
        tiny_model(loss="l1")


@pytest.mark.parametrize("loss", ["mse_cos", "contrastive"])
def test_loss_decreases_on_a_fixed_batch(loss):
    model = tiny_model(loss=loss, caption_selection="first")
    b = batch(n=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        preds, targets = model(b["voxels"]), model.targets(b, training=True)
        total = sum(model.mapper_loss(preds[k], targets[k]) for k in ("clip_image", "clip_text"))
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(total.item())
    assert losses[-1] < 0.7 * losses[0]


class _StepRecorder(L.Callback):
    def __init__(self):
        self.steps, self.lrs = [], []

    def on_train_epoch_end(self, trainer, pl_module):
        optimizer = trainer.optimizers[0]
        self.steps.append(int(optimizer.state[next(pl_module.parameters())]["step"]))
        self.lrs.append(optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize("reset", [True, False])
def test_lr_decay_recreates_adam(reset, tmp_path):
    b = batch(n=4)
    items = [{k: v[i] for k, v in b.items()} for i in range(4)]
    loader = DataLoader(items, batch_size=2)  # 2 steps per epoch
    model = tiny_model(lr_decay_epochs=2, lr=1e-3, reset_optimizer_on_decay=reset)
    recorder = _StepRecorder()
    trainer = L.Trainer(
        max_epochs=5,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, train_dataloaders=loader)
    # recorded after each epoch's scheduler step: lr x0.8 every 2 epochs (epochs 0-1 ran at 1e-3, 2-3 at 8e-4,
    # ...); Adam's step counter restarts at each decay epoch when it is re-created
    assert recorder.lrs == pytest.approx([1e-3, 8e-4, 8e-4, 6.4e-4, 6.4e-4])
    assert recorder.steps == ([2, 4, 2, 4, 2] if reset else [2, 4, 6, 8, 10])


def test_save_load_round_trip(tmp_path):
    model = tiny_model(threshold=None, stem_stride=4).eval()
    model.save_pretrained(tmp_path / "model")
    loaded = MindReader.load_pretrained(tmp_path / "model", n_voxels=30)
    voxels = torch.randn(3, 30)
    for name in ("clip_image", "clip_text"):
        torch.testing.assert_close(loaded(voxels)[name], model(voxels)[name], rtol=0, atol=0)
    assert loaded.hparams.threshold is None and loaded.image_mapper.positions == 34 // 4


def test_world_configs_differ_only_in_generator_inputs():
    world = load_method_config("mindreader", "world")
    image_only = load_method_config("mindreader", "world-image-only")
    assert world["model"] == image_only["model"] and world["data"] == image_only["data"]
    assert world["generator"]["inputs"] == {"clip_image": "clip_image", "clip_text": "clip_text"}
    assert image_only["generator"]["inputs"] == {"clip_image": "clip_image"}
    nsd = load_method_config("mindreader", "nsd")
    assert nsd["data"]["backbone"] == "ViT-B-32:openai" and nsd["model"]["init_args"]["threshold"] == 1.5


@pytest.mark.slow
def test_tiny_world_end_to_end(tmp_path):
    """Tiny world through ``run_bench``: captions reach the caption mapper, both predictions are scored."""
    from brainbench.bench import run_bench

    init_args = {"channels": 4, "hidden": 8, "lr_decay_epochs": 1}
    config = tiny_config(tmp_path, "mindreader", epochs=2, init_args=init_args)
    request = tiny_request(tmp_path, "mindreader", dataset="world-nsd", config=config)
    row, result = run_bench(request)
    for name in ("clip_image", "clip_text"):
        key = next(
            k
            for k in result.values
            if k.startswith("retrieval_b2i_top1_subset") and k.endswith(f".{name}@v1")
        )
        assert 0 <= result.values[key] <= 1
    loaded = MindReader.load_pretrained(tmp_path / "runs" / row["run_id"] / "model")
    assert loaded.hparams.channels == 4 and loaded.hparams.threshold == 5.0
