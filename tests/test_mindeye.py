"""MindEye: shapes, the paper's parameter count, the released loss definitions, the schedule, save/load, e2e.

Reference numbers: shared/reference/methods.md §7 (voxel2clip 940.2M without the projector, +7.35M projector;
BiMixCo for the first 33% of epochs at tau .006, SoftCLIP tau cosine-annealed .004 -> .0075). The loss tests
check against values written out by hand from the equations (explicit loops / closed forms), not the module.
"""

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from brainbench.errors import ConfigError
from brainbench.methods import load_method_config
from brainbench.methods.losses import ContrastiveSchedule, cosine_anneal, mixco, mixco_nce, soft_clip_loss
from brainbench.methods.mindeye import MindEye

TINY = {"n_voxels": 40, "target_shapes": {"clip_tokens": (3, 8)}, "hidden": 16, "proj_hidden": 12}


def tiny_model(**overrides):
    torch.manual_seed(0)
    return MindEye(**(TINY | overrides))


@pytest.mark.parametrize("backbone", ["mlp", "ridge"])
def test_forward_shapes(backbone):
    model = tiny_model(backbone=backbone).eval()
    voxels = torch.randn(5, 40)
    out = model(voxels)
    assert set(out) == {"clip_tokens"} and out["clip_tokens"].shape == (5, 3, 8)
    assert model.backbone_tokens(voxels).shape == (5, 3, 8)
    assert torch.isfinite(out["clip_tokens"]).all()


def test_ridge_variant_first_layer_is_linear():
    ridge, mlp = tiny_model(backbone="ridge"), tiny_model(backbone="mlp")
    assert isinstance(ridge.lin0, torch.nn.Linear)
    assert ridge.n_parameters() == mlp.n_parameters() - 2 * 16  # no LayerNorm after the first layer
    with pytest.raises(ConfigError, match="'mlp' or 'ridge'"):
        tiny_model(backbone="conv")


def test_paper_parameter_count_on_meta_device():
    with torch.device("meta"):
        model = MindEye(n_voxels=15724, target_shapes={"clip_tokens": (257, 768)})
    projector = sum(p.numel() for p in model.projector.parameters())
    assert model.n_parameters() - projector == 940_225_280  # the paper's 940.2M voxel2clip
    assert projector == 7_354_624  # methods.md: +7.35M
    v, h, td = 15724, 4096, 257 * 768
    assert model.n_parameters() - projector == (v + 1) * h + 2 * h + 4 * ((h + 1) * h + 2 * h) + (h + 1) * td


def test_nsd_config_matches_paper_defaults():
    full = load_method_config("mindeye", "nsd")
    config = full["model"]["init_args"]
    assert config["hidden"] == 4096 and config["n_blocks"] == 4 and config["proj_hidden"] == 2048
    assert (
        full["trainer"]["max_epochs"] == 240 and config["mixup_pct"] == 0.33 and config["mixco_temp"] == 0.006
    )


def test_mixco_mixes_half_with_beta_weights():
    torch.manual_seed(0)
    voxels = torch.randn(2000, 3)
    mixed, perm, lam = mixco(voxels)
    torch.testing.assert_close(mixed, lam[:, None] * voxels + (1 - lam[:, None]) * voxels[perm])
    selected = lam != 1
    assert 0.45 < selected.float().mean() < 0.55
    assert torch.equal(mixed[~selected], voxels[~selected])
    # Beta(.15, .15) is U-shaped: most mixing weights sit near 0 or 1
    assert ((lam[selected] < 0.1) | (lam[selected] > 0.9)).float().mean() > 0.6


def _manual_mixco_nce(b, c, temp, perm, lam):
    n = len(b)
    logits = [[float(b[i] @ c[j]) / temp for j in range(n)] for i in range(n)]
    probs = [[0.0] * n for _ in range(n)]
    for i in range(n):
        probs[i][i] = float(lam[i])
    for i in range(n):
        probs[i][int(perm[i])] = 1 - float(lam[i])

    def logsoftmax(row):
        m = max(row)
        return [x - m - math.log(sum(math.exp(y - m) for y in row)) for x in row]

    fwd = -sum(sum(p * q for p, q in zip(probs[i], logsoftmax(logits[i]), strict=True)) for i in range(n)) / n
    cols = [[logits[i][j] for i in range(n)] for j in range(n)]
    bwd = -sum(sum(probs[i][j] * ls for i, ls in enumerate(logsoftmax(cols[j]))) for j in range(n)) / n
    return (fwd + bwd) / 2


def test_mixco_nce_matches_hand_computation():
    torch.manual_seed(3)
    b = F.normalize(torch.randn(5, 7, dtype=torch.float64), dim=-1)
    c = F.normalize(torch.randn(5, 7, dtype=torch.float64), dim=-1)
    perm, lam = torch.tensor([2, 0, 1, 3, 4]), torch.tensor([0.3, 1.0, 0.9, 0.2, 1.0], dtype=torch.float64)
    assert mixco_nce(b, c, 0.5, perm, lam).item() == pytest.approx(_manual_mixco_nce(b, c, 0.5, perm, lam))
    # without mixing: the symmetric InfoNCE, i.e. lam = 1 everywhere (with a derangement: as released, a
    # sample paired with itself would get P_ii = 1 - lam, the assignment after the diagonal wins)
    hard = mixco_nce(b, c, 0.5)
    ones = torch.ones(5, dtype=torch.float64)
    assert hard.item() == pytest.approx(_manual_mixco_nce(b, c, 0.5, torch.tensor([1, 2, 3, 4, 0]), ones))


def test_soft_clip_loss_matches_closed_form():
    torch.manual_seed(4)
    b = F.normalize(torch.randn(4, 6, dtype=torch.float64), dim=-1)
    c = F.normalize(torch.randn(4, 6, dtype=torch.float64), dim=-1)
    temp = 0.3
    q = torch.exp(c @ c.T / temp)
    q = q / q.sum(1, keepdim=True)
    s = b @ c.T / temp
    fwd = -(q * (s - torch.logsumexp(s, 1, keepdim=True))).sum() / 4
    bwd = -(q * (s.T - torch.logsumexp(s.T, 1, keepdim=True))).sum() / 4
    torch.testing.assert_close(soft_clip_loss(b, c, temp), (fwd + bwd) / 2)
    # with orthogonal targets at a low temperature the soft labels become the identity
    eye = torch.eye(4, 6, dtype=torch.float64)
    torch.testing.assert_close(soft_clip_loss(b, eye, 0.01), mixco_nce(b, eye, 0.01), atol=1e-6, rtol=1e-6)


def test_schedule_bimixco_then_annealed_softclip():
    model = tiny_model(max_epochs=240)
    schedule = model.schedule
    assert schedule == ContrastiveSchedule()  # MindEye's defaults
    assert model.schedule_epochs() == 240  # no trainer: the constructor's max_epochs
    assert schedule.mixup_epochs(240) == 79  # int(.33 * 240)
    assert schedule.soft_temperature(79, 240) == pytest.approx(0.004)
    assert schedule.soft_temperature(239, 240) == pytest.approx(0.0075)
    assert schedule.temperature(78, 240) == 0.006 and schedule.temperature(79, 240) == pytest.approx(0.004)
    mid = 79 + (240 - 79 - 1) / 2
    assert schedule.soft_temperature(int(mid), 240) == pytest.approx(0.00575, abs=1e-4)
    torch.testing.assert_close(
        cosine_anneal(0.004, 0.0075, 3), torch.tensor([0.004, 0.00575, 0.0075]).double()
    )
    torch.manual_seed(5)
    pred, target = torch.randn(6, 3, 8), torch.randn(6, 3, 8)
    b, c = F.normalize(pred.flatten(1), dim=-1), F.normalize(target.flatten(1), dim=-1)
    torch.testing.assert_close(schedule.loss(pred, target, 10, 240), mixco_nce(b, c, 0.006))
    torch.testing.assert_close(
        schedule.loss(pred, target, 100, 240), soft_clip_loss(b, c, schedule.soft_temperature(100, 240))
    )


@pytest.mark.parametrize("epoch", [0, 5])  # a BiMixCo epoch and a SoftCLIP epoch (mixup_epochs = 3)
def test_loss_decreases_on_a_fixed_batch(epoch):
    model = tiny_model(lin0_dropout=0.0, block_dropout=0.0, max_epochs=10)
    torch.manual_seed(2)
    voxels, targets = torch.randn(8, 40), torch.randn(8, 3, 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        torch.manual_seed(7)  # the same mixing every step, so the objective is fixed
        perm = lam = None
        x = voxels
        if model.schedule.mixing(epoch, 10):
            x, perm, lam = mixco(voxels)
        loss = model.schedule.loss(model(x)["clip_tokens"], targets, epoch, 10, perm, lam)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_save_load_round_trip(tmp_path):
    model = tiny_model(backbone="ridge").eval()
    voxels = torch.randn(3, 40)
    model.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "decoder.safetensors").is_file()
    loaded = MindEye.load_pretrained(tmp_path / "model", n_voxels=40)
    assert isinstance(loaded, MindEye) and not loaded.training and loaded.hparams.backbone == "ridge"
    torch.testing.assert_close(loaded(voxels)["clip_tokens"], model(voxels)["clip_tokens"], rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"trained on 40 voxels but the data has 41"):
        MindEye.load_pretrained(tmp_path / "model", n_voxels=41)


@pytest.mark.slow
def test_tiny_world_end_to_end(tmp_path: Path) -> None:
    """Tiny world through ``run_bench``: the schedule runs, the loss falls, a checkpoint and row are kept."""
    from brainbench.bench import BenchRequest, run_bench

    request = BenchRequest(
        method="mindeye",
        subject=1,
        world_preset="tiny",
        config=str(Path(__file__).parent / "configs" / "mindeye_tiny.yaml"),
        home=tmp_path / "home",
        leaderboards=tmp_path / "leaderboards",
        runs=tmp_path / "runs",
        progress=False,
        accelerator="cpu",
        val_fraction=0.2,
    )
    row, result = run_bench(request)
    b2i = "retrieval_b2i_top1_subset60/world-clip:v1.clip_tokens@v1"
    assert 0 <= row[b2i] <= 1 and result.chance[b2i] == pytest.approx(1 / 60)
    run_dir = tmp_path / "runs" / row["run_id"]
    metrics = pd.read_csv(run_dir / "logs" / "metrics.csv")
    val = metrics.dropna(subset=["val_top1"])
    assert len(val) == 6 and val["val_top1"].between(0, 1).all()
    train = metrics.dropna(subset=["train_loss"])
    # BiMixCo epochs (0, 1: int(.33 * 6) = 1 -> epoch 0 only) log tau .006, SoftCLIP epochs the annealed one
    temps = train.groupby("epoch")["train_temp"].mean()
    assert temps.iloc[0] == pytest.approx(0.006) and temps.iloc[1] == pytest.approx(0.004)
    assert temps.iloc[-1] == pytest.approx(0.0075)
    soft = train[train["epoch"] >= 1].groupby("epoch")["train_loss"].mean()
    assert soft.iloc[-2:].mean() < soft.iloc[:2].mean()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    loaded = MindEye.load_pretrained(run_dir / "model")
    assert loaded.hparams.hidden == 64
    table = pd.read_csv(tmp_path / "leaderboards" / "world-nsd" / "retrieval.csv")
    assert list(table["method"]) == ["mindeye"]
