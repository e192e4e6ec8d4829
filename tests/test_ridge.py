"""Ridge: recovers a known linear map through a real Lightning Trainer and picks alpha on validation.

Synthetic data ``Y = X W + 0.3 + noise`` with anisotropic voxels (column scales 0.01..1), so that the
regularisation strength matters: with little noise the smallest alpha wins, with much noise and few training
samples a larger one does. The solution is checked against a direct ``numpy.linalg.solve`` of the normal
equations.
"""

import warnings

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from brainbench.errors import ConfigError
from brainbench.methods.ridge import RidgeDecoder

N_VOXELS = 30
SHAPE = (2, 5)
ALPHAS = (1e-3, 1e-1, 1e1, 1e3, 1e5)


def make_split(weight, n, noise, generator, first_id):
    scales = torch.logspace(-2, 0, N_VOXELS)
    voxels = torch.randn(n, N_VOXELS, generator=generator) * scales
    targets = voxels @ weight + 0.3 + noise * torch.randn(n, weight.shape[1], generator=generator)
    return [
        {
            "voxels": voxels[i],
            "clip_tokens": targets[i].view(SHAPE),
            "stim_id": torch.tensor(first_id + i),
            "subject": torch.tensor(1),
        }
        for i in range(n)
    ]


class SyntheticDataModule(L.LightningDataModule):
    def __init__(self, train, val):
        super().__init__()
        self.train_items, self.val_items = train, val

    def train_dataloader(self):
        return DataLoader(self.train_items, batch_size=64, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_items, batch_size=64)


def fit_ridge(noise, n_train, seed=0, max_epochs=1):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(N_VOXELS, int(np.prod(SHAPE)), generator=generator)
    datamodule = SyntheticDataModule(
        make_split(weight, n_train, noise, generator, 0), make_split(weight, 200, noise, generator, 10_000)
    )
    model = RidgeDecoder(n_voxels=N_VOXELS, target_shapes={"clip_tokens": SHAPE}, alphas=ALPHAS)
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no optimizer / no val loop in fit: both intended
        model.fit(trainer, datamodule)
    return model, weight, datamodule, trainer


@pytest.fixture(scope="module")
def low_noise():
    return fit_ridge(noise=0.01, n_train=300)


def test_recovers_the_weights_with_little_noise(low_noise):
    model, weight, _, _ = low_noise
    r = np.corrcoef(model.weight.numpy().ravel(), weight.numpy().ravel())[0, 1]
    assert r > 0.95
    np.testing.assert_allclose(model.bias.numpy(), 0.3, atol=0.05)


def test_matches_a_direct_solve_of_the_normal_equations(low_noise):
    model, _, datamodule, _ = low_noise
    x = np.stack([item["voxels"].numpy() for item in datamodule.train_items]).astype(np.float64)
    y = np.stack([item["clip_tokens"].numpy().ravel() for item in datamodule.train_items]).astype(np.float64)
    xc, yc = x - x.mean(0), y - y.mean(0)
    alpha = float(model.alpha)
    expected = np.linalg.solve(xc.T @ xc + alpha * np.eye(N_VOXELS), xc.T @ yc)
    np.testing.assert_allclose(model.weight.numpy(), expected, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(model.bias.numpy(), y.mean(0) - x.mean(0) @ expected, rtol=1e-3, atol=1e-4)


def test_small_alpha_for_low_noise_large_alpha_for_high_noise(low_noise):
    assert float(low_noise[0].alpha) == pytest.approx(min(ALPHAS))
    noisy, _, _, _ = fit_ridge(noise=5.0, n_train=60)
    assert float(noisy.alpha) >= 1e1


def test_logged_validation_pattern_correlation(low_noise):
    _, _, _, trainer = low_noise
    assert float(trainer.callback_metrics["alpha"]) == pytest.approx(min(ALPHAS))
    # an unbiased Pearson r: ~1 for a near-noiseless fit even with 10-dimensional targets
    assert float(trainer.callback_metrics["val_pattern_r"]) > 0.99


def test_forward_and_predict_step(low_noise):
    model, weight, _, _ = low_noise
    voxels = torch.randn(4, N_VOXELS)
    out = model(voxels)
    assert set(out) == {"clip_tokens"} and out["clip_tokens"].shape == (4, *SHAPE)
    torch.testing.assert_close(out["clip_tokens"].flatten(1), voxels @ model.weight + model.bias)
    predicted = model.predict_step({"voxels": voxels, "stim_id": torch.arange(4)}, 0)
    assert predicted["stim_id"].tolist() == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match=f"built for {N_VOXELS} voxels but the data has 29"):
        model.predict_step({"voxels": torch.zeros(1, 29), "stim_id": torch.zeros(1)}, 0)


def test_n_parameters_counts_the_fitted_coefficients():
    model = RidgeDecoder(n_voxels=20, target_shapes={"clip_tokens": (2, 3)})
    assert model.n_parameters() == 20 * 6 + 6
    pooled = RidgeDecoder(n_voxels=20, target_shapes={"clip_image": (8,)}, target="clip_image")
    assert pooled.n_parameters() == 20 * 8 + 8
    assert pooled(torch.zeros(3, 20))["clip_image"].shape == (3, 8)


def test_statistics_exist_only_while_fitting(low_noise):
    fresh = RidgeDecoder(n_voxels=20, target_shapes={"clip_tokens": (2, 3)})
    assert not hasattr(fresh, "xtx")  # X^T X would be 2 GB for describe/load at NSD scale
    assert set(fresh.state_dict()) == set(low_noise[0].state_dict()) == {"weight", "bias", "alpha"}


def test_more_epochs_give_the_same_solution(low_noise):
    # the statistics restart every epoch, so a second pass does not double X^T X (which halves alpha)
    twice, _, _, _ = fit_ridge(noise=0.01, n_train=300, max_epochs=2)
    torch.testing.assert_close(twice.weight, low_noise[0].weight, rtol=1e-5, atol=1e-6)


def test_target_needs_a_shape():
    with pytest.raises(ConfigError, match="clip_image"):
        RidgeDecoder(n_voxels=20, target_shapes={"clip_tokens": (2, 3)}, target="clip_image")


def test_save_load_round_trip(low_noise, tmp_path):
    model, _, _, _ = low_noise
    model.save_pretrained(tmp_path / "model")
    loaded = RidgeDecoder.load_pretrained(tmp_path / "model", n_voxels=N_VOXELS)
    assert isinstance(loaded, RidgeDecoder)
    voxels = torch.randn(5, N_VOXELS)
    torch.testing.assert_close(loaded(voxels)["clip_tokens"], model(voxels)["clip_tokens"], rtol=0, atol=0)
    assert float(loaded.alpha) == float(model.alpha)
    assert tuple(loaded.hparams.alphas) == ALPHAS
    with pytest.raises(ConfigError, match=f"trained on {N_VOXELS} voxels but the data has 31"):
        RidgeDecoder.load_pretrained(tmp_path / "model", n_voxels=31)
