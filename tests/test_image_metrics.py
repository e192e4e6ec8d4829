"""Pixel metrics and resolution chains against independent references.

References: numpy.corrcoef (PixCorr), scikit-image ``structural_similarity`` / ``rgb2gray`` /
``peak_signal_noise_ratio`` (SSIM, grey, PSNR), torchvision's tensor resize and Pillow's ``Image.resize``
(the chains), each called the way MindEye1/2 and Brain-Diffuser call them (metrics.md §1.3-§1.4).
"""

import dataclasses

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.v2.functional as TF
from PIL import Image
from skimage import data
from skimage.color import rgb2gray
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from brainbench.errors import BrainbenchError, ConfigError
from brainbench.metrics.image_metrics import (
    PSNR,
    SSIM,
    PixCorr,
    pixcorr,
    pixcorr_per_image,
    pixcorr_spec,
    psnr_per_image,
    psnr_spec,
    ssim,
    ssim_per_image,
    ssim_spec,
)
from brainbench.metrics.image_metrics import (
    structural_similarity as torch_ssim,
)
from brainbench.metrics.preprocess import (
    CHAINS,
    ResizeStep,
    ResolutionChain,
    apply_chain,
    check_images,
    get_chain,
    list_chains,
    to_grey,
)
from brainbench.metrics.specs import parse_metric_id

MINDEYE_SSIM_ARGS = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)


def _photos(size, n=3):
    """``n`` real photos (skimage.data), cropped square and resized with Pillow to ``size``: uint8 NHWC."""
    out = []
    for image in (data.astronaut(), data.coffee(), data.chelsea())[:n]:
        side = min(image.shape[:2])
        square = Image.fromarray(image[:side, :side])
        out.append(np.asarray(square.resize((size, size), Image.Resampling.BICUBIC)))
    return np.stack(out)


def _degrade(images_uint8, seed, noise=40.0):
    """A 'reconstruction': a flipped-in-part, noisy copy (uint8 NHWC), so scores sit well inside (0, 1)."""
    rng = np.random.default_rng(seed)
    recon = images_uint8.astype(np.float64)
    recon[:, :, : recon.shape[2] // 3] = recon[:, ::-1, : recon.shape[2] // 3]
    recon += noise * rng.standard_normal(recon.shape)
    return np.clip(recon, 0, 255).round().astype(np.uint8)


def _float(images_uint8):
    return torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float() / 255.0


# ---------------------------------------------------------------------------------------------- PixCorr
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pixcorr_matches_numpy_corrcoef(dtype):
    rng = np.random.default_rng(0)
    target = rng.uniform(size=(6, 3, 9, 11))
    pred = np.clip(0.6 * target + 0.4 * rng.uniform(size=target.shape), 0, 1)
    expected = [np.corrcoef(target[i].ravel(), pred[i].ravel())[0, 1] for i in range(6)]
    got = pixcorr_per_image(
        torch.from_numpy(pred).to(dtype), torch.from_numpy(target).to(dtype), chain="native"
    )
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    assert pixcorr(torch.from_numpy(pred), torch.from_numpy(target), chain="native").item() == pytest.approx(
        np.mean(expected), abs=1e-6
    )


def test_pixcorr_uint8_nhwc_equals_float_nchw():
    gt = _photos(32)
    recon = _degrade(gt, seed=1)
    from_uint8 = pixcorr_per_image(recon, gt, chain="native")
    from_float = pixcorr_per_image(_float(recon).double(), _float(gt).double(), chain="native")
    expected = [np.corrcoef(gt[i].ravel() / 255.0, recon[i].ravel() / 255.0)[0, 1] for i in range(len(gt))]
    np.testing.assert_allclose(from_uint8.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(from_float.numpy(), expected, atol=1e-12)


def test_pixcorr_constant_image_scores_zero_and_self_one():
    images = torch.rand(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    blank = torch.full_like(images, 0.5)
    assert pixcorr_per_image(blank, images, chain="native").tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(pixcorr_per_image(images, images, chain="native").numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(
        pixcorr_per_image(1 - images, images, chain="native").numpy(), -1.0, atol=1e-12
    )


# ---------------------------------------------------------------------------------------------- SSIM core
@pytest.mark.parametrize(
    "kwargs,channel_axis,layout",
    [
        (MINDEYE_SSIM_ARGS, None, "2d"),  # the pinned definition, grey
        (MINDEYE_SSIM_ARGS, -1, "2d"),  # per-channel RGB, averaged
        # MinD-Video: skimage defaults, 7x7 box and sample covariance (our function's defaults differ)
        (dict(gaussian_weights=False, data_range=1.0, use_sample_covariance=True), -1, "2d"),
        (dict(gaussian_weights=False, win_size=5, data_range=2.0, use_sample_covariance=True), None, "2d"),
        (dict(gaussian_weights=True, sigma=0.8, data_range=1.0, use_sample_covariance=True), None, "2d"),
        (MINDEYE_SSIM_ARGS, "columns", "columns"),  # scikit-image <= 0.19 with multichannel=True on grey
    ],
)
def test_structural_similarity_matches_skimage(kwargs, channel_axis, layout):
    rng = np.random.default_rng(3)
    channels = 3 if channel_axis == -1 else 1
    y = rng.uniform(size=(4, channels, 37, 29))
    x = np.clip(y + 0.3 * rng.standard_normal(y.shape), 0, 1)
    x[1] = y[1]  # an identical pair: SSIM exactly 1
    expected = []
    for i in range(4):
        if channel_axis == -1:
            expected.append(
                structural_similarity(
                    x[i].transpose(1, 2, 0), y[i].transpose(1, 2, 0), channel_axis=-1, **kwargs
                )
            )
        elif channel_axis == "columns":  # the last axis (columns) taken as channels: 1-D SSIM per column
            expected.append(structural_similarity(x[i, 0], y[i, 0], channel_axis=-1, **kwargs))
        else:
            expected.append(structural_similarity(x[i, 0], y[i, 0], **kwargs))
    got = torch_ssim(
        torch.from_numpy(x), torch.from_numpy(y), layout=layout, block_pixels=2 * 37 * 29, **kwargs
    )
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-10)
    assert got[1].item() == pytest.approx(1.0, abs=1e-12)


def test_structural_similarity_rejects_bad_windows():
    x = torch.rand(1, 1, 20, 20)
    with pytest.raises(ValueError, match="odd"):
        torch_ssim(x, x, gaussian_weights=False, win_size=6)
    with pytest.raises(ValueError, match="window"):
        torch_ssim(x, x, win_size=7)  # Gaussian sigma 1.5 means an 11-px window
    with pytest.raises(ValueError, match="smaller"):
        torch_ssim(torch.rand(1, 1, 8, 30), torch.rand(1, 1, 8, 30))


def test_column_mode_is_the_version_trap():
    # metrics.md 1.4: the same call gives two numbers depending on the scikit-image version
    gt = _photos(96, n=1)
    recon = _degrade(gt, seed=2)
    two_d = ssim_per_image(recon, gt, chain="native").item()
    columns = ssim_per_image(recon, gt, chain="native", layout="columns").item()
    assert abs(two_d - columns) > 1e-3


# ---------------------------------------------------------------------------------------------- chains
def test_registry_and_specs():
    assert list_chains() == ["brainbench", "braindiffuser", "mindeye", "native"]
    assert get_chain(CHAINS["mindeye"]) is CHAINS["mindeye"]
    with pytest.raises(ConfigError, match="unknown resolution chain"):
        get_chain("mindeye3")
    ids = set()
    for chain_id in list_chains():
        for spec in (pixcorr_spec(chain_id), ssim_spec(chain_id), ssim_spec(chain_id, layout="columns")):
            name, network, version = parse_metric_id(spec.id)
            assert network == "" and version == CHAINS[chain_id].version and spec.higher_is_better
            assert spec.params["chain"] == chain_id and spec.params["chain_version"] == 1
            ids.add(spec.id)
    assert len(ids) == 12  # every chain and layout is its own column
    assert pixcorr_spec().id == "pixcorr@v1" and ssim_spec().id == "ssim@v1"
    assert ssim_spec("mindeye").id == "ssim_mindeye@v1"
    assert ssim_spec("braindiffuser", layout="columns").id == "ssim_braindiffuser_columns@v1"
    assert psnr_spec().id == "psnr_native@v2" and psnr_spec("brainbench").id == "psnr@v2"
    assert pixcorr_spec("mindeye").params["resize"] == "torch-bilinear-256-noaa>torch-bilinear-425-noaa"
    assert ssim_spec().params["covariance"] == "population" and ssim_spec().params["win_size"] == 11
    # a changed chain is a new version, hence a new column
    bumped = dataclasses.replace(CHAINS["mindeye"], version=2)
    assert ssim_spec(bumped).id == "ssim_mindeye@v2"


def test_chain_definitions_are_validated():
    with pytest.raises(ConfigError, match="last resize step"):
        ResolutionChain("x", 1, 300, (ResizeStep(256, "bilinear", False),), False, "rgb", "grey")
    with pytest.raises(ConfigError, match="quantize_uint8"):
        ResolutionChain("x", 1, 256, (ResizeStep(256, "bicubic", True, "pil"),), False, "rgb", "grey")
    with pytest.raises(ConfigError, match="antialiased"):
        ResizeStep(256, "bicubic", False, "pil")
    with pytest.raises(ConfigError):
        ResizeStep(0, "bilinear", False)


@pytest.mark.parametrize("antialias", [False, True])
def test_torch_steps_equal_torchvision_tensor_resize(antialias):
    images = torch.rand(2, 3, 512, 512, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    chain = ResolutionChain("t", 1, 425, (ResizeStep(425, "bilinear", antialias),), False, "rgb", "grey")
    expected = TF.resize(images, [425, 425], interpolation=T.InterpolationMode.BILINEAR, antialias=antialias)
    assert torch.equal(apply_chain(images, chain), expected)


def test_grey_matches_rgb2gray():
    images = torch.rand(2, 3, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = rgb2gray(images.permute(0, 2, 3, 1).numpy())
    np.testing.assert_allclose(to_grey(images)[:, 0].numpy(), expected, atol=1e-15)


def test_mindeye_chain_reproduces_the_mindeye_recipe():
    # MindEye2 final_evaluations: GT all_images.pt (float, 256), recons 512 -> Resize((256,256)), then
    # Resize(425, BILINEAR) on both, float32 tensors, torchvision <= 0.16 (antialias False); PixCorr with
    # np.corrcoef on RGB; SSIM = structural_similarity(rgb2gray(rec), rgb2gray(gt), channel_axis=None, ...)
    gt = _float(_photos(256))
    recon = _float(_degrade(_photos(512), seed=4))
    recon_256 = T.Resize((256, 256), antialias=False)(recon).float()
    resize_425 = T.Resize(425, interpolation=T.InterpolationMode.BILINEAR, antialias=False)
    gt_425, recon_425 = resize_425(gt), resize_425(recon_256)
    n = len(gt)
    expected_pixcorr = [np.corrcoef(gt_425[i].flatten(), recon_425[i].flatten())[0][1] for i in range(n)]
    gt_grey = rgb2gray(gt_425.permute(0, 2, 3, 1).numpy())
    recon_grey = rgb2gray(recon_425.permute(0, 2, 3, 1).numpy())
    expected_ssim = [
        structural_similarity(recon_grey[i], gt_grey[i], channel_axis=None, **MINDEYE_SSIM_ARGS)
        for i in range(n)
    ]
    np.testing.assert_allclose(
        pixcorr_per_image(recon, gt, chain="mindeye").numpy(), expected_pixcorr, atol=1e-6
    )
    # the reference runs in float32 (as MindEye does), ours in float64: ~2e-7 apart
    np.testing.assert_allclose(ssim_per_image(recon, gt, chain="mindeye").numpy(), expected_ssim, atol=1e-6)
    assert 0.05 < min(expected_ssim) and max(expected_ssim) < 0.95


def test_braindiffuser_chain_reproduces_the_braindiffuser_recipe():
    # Brain-Diffuser evaluate_reconstruction.py: Image.open(recon png).resize((425, 425)) / 255, GT png native
    # 425 / 255, np.corrcoef on RGB; structural_similarity(rgb2gray(...), multichannel=True, ...) which
    # scikit-image 0.17.2 runs per column (reproduced here with channel_axis=-1) and >= 0.20 in 2-D
    gt = _photos(425, n=2)
    recon = _degrade(_photos(512, n=2), seed=5)
    recon_425 = np.stack([np.asarray(Image.fromarray(r).resize((425, 425))) / 255.0 for r in recon])
    gt_f = gt / 255.0
    expected_pixcorr = [
        np.corrcoef(gt_f[i].reshape(1, -1), recon_425[i].reshape(1, -1))[0, 1] for i in range(2)
    ]
    gt_grey, recon_grey = rgb2gray(gt_f), rgb2gray(recon_425)
    expected_2d = [structural_similarity(recon_grey[i], gt_grey[i], **MINDEYE_SSIM_ARGS) for i in range(2)]
    expected_cols = [
        structural_similarity(recon_grey[i], gt_grey[i], channel_axis=-1, **MINDEYE_SSIM_ARGS)
        for i in range(2)
    ]
    np.testing.assert_allclose(
        pixcorr_per_image(recon, gt, chain="braindiffuser").numpy(), expected_pixcorr, atol=1e-10
    )
    np.testing.assert_allclose(
        ssim_per_image(recon, gt, chain="braindiffuser").numpy(), expected_2d, atol=1e-4
    )
    got_cols = ssim_per_image(recon, gt, chain="braindiffuser", layout="columns")
    np.testing.assert_allclose(got_cols.numpy(), expected_cols, atol=1e-4)
    # float input is quantised to 8 bits first (the PNG round trip), so it scores like the uint8 input
    np.testing.assert_allclose(
        ssim_per_image(_float(recon).double(), gt, chain="braindiffuser").numpy(), expected_2d, atol=1e-10
    )


def test_canonical_chain_matches_skimage_after_torchvision_resize():
    gt = _float(_photos(300, n=2)).double()
    recon = _float(_degrade(_photos(512, n=2), seed=6)).double()
    resize = dict(interpolation=T.InterpolationMode.BILINEAR, antialias=True)
    gt_425, recon_425 = TF.resize(gt, [425, 425], **resize), TF.resize(recon, [425, 425], **resize)
    gt_grey = rgb2gray(gt_425.permute(0, 2, 3, 1).numpy())
    recon_grey = rgb2gray(recon_425.permute(0, 2, 3, 1).numpy())
    expected = [structural_similarity(recon_grey[i], gt_grey[i], **MINDEYE_SSIM_ARGS) for i in range(2)]
    np.testing.assert_allclose(ssim_per_image(recon, gt).numpy(), expected, atol=1e-10)
    assert ssim(recon, gt).item() == pytest.approx(np.mean(expected), abs=1e-10)
    expected_r = [np.corrcoef(gt_425[i].flatten(), recon_425[i].flatten())[0, 1] for i in range(2)]
    np.testing.assert_allclose(pixcorr_per_image(recon, gt).numpy(), expected_r, atol=1e-10)


def test_native_chain_matches_skimage():
    gt = _photos(64)
    recon = _degrade(gt, seed=10)
    expected = [
        structural_similarity(rgb2gray(recon[i] / 255.0), rgb2gray(gt[i] / 255.0), **MINDEYE_SSIM_ARGS)
        for i in range(len(gt))
    ]
    np.testing.assert_allclose(ssim_per_image(recon, gt, chain="native").numpy(), expected, atol=1e-10)


def test_block_size_does_not_change_scores():
    gt = _photos(40)
    recon = _degrade(gt, seed=7)
    np.testing.assert_array_equal(
        ssim_per_image(recon, gt, block_size=1).numpy(), ssim_per_image(recon, gt, block_size=8).numpy()
    )
    np.testing.assert_array_equal(
        pixcorr_per_image(recon, gt, block_size=2).numpy(),
        pixcorr_per_image(recon, gt, block_size=16).numpy(),
    )


# ---------------------------------------------------------------------------------------------- PSNR
def test_psnr_known_values_and_skimage():
    target = torch.full((2, 3, 8, 8), 0.5, dtype=torch.float64)
    assert psnr_per_image(target + 0.1, target).numpy() == pytest.approx([20.0, 20.0])  # MSE 0.01
    # identical images: the MSE floor of one grey level in one value, 10·log10(255² · 3·H·W), finite
    n_values = target[0].numel()
    assert psnr_per_image(target, target).numpy() == pytest.approx([10 * np.log10(255.0**2 * n_values)] * 2)
    gt = _photos(24)
    recon = _degrade(gt, seed=8)
    expected = [peak_signal_noise_ratio(gt[i], recon[i], data_range=255) for i in range(len(gt))]
    np.testing.assert_allclose(psnr_per_image(recon, gt).numpy(), expected, rtol=1e-12)


# ---------------------------------------------------------------------------------------------- inputs
def test_input_validation():
    good = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pixcorr_per_image(good * 255, good)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        pixcorr_per_image(good.permute(0, 2, 3, 1), good)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        pixcorr_per_image((good * 255).to(torch.uint8), good)
    with pytest.raises(BrainbenchError, match="NaN"):
        pixcorr_per_image(torch.full_like(good, float("nan")), good)
    with pytest.raises(ValueError, match="same N"):
        pixcorr_per_image(good[:1], good)
    with pytest.raises(ValueError, match="native"):
        pixcorr_per_image(good, torch.rand(2, 3, 12, 12), chain="native")
    # slight decoder overshoot is clamped, as MindEye1 clamps its recons
    overshoot = good.clone()
    overshoot[0, 0, 0, 0] = 1.02
    with pytest.warns(UserWarning, match=r"pred: float images in \[.*1\.02\] are clamped to \[0, 1\]"):
        assert check_images(overshoot, "pred") is overshoot
    clamped = good.clone()
    clamped[0, 0, 0, 0] = 1.0
    with pytest.warns(UserWarning, match="clamped"):
        clamped_score = pixcorr_per_image(overshoot, good, chain="native")
    assert torch.equal(clamped_score, pixcorr_per_image(clamped, good, chain="native"))
    # different sizes are fine when the chain resizes both
    assert pixcorr_per_image(good, torch.rand(2, 3, 12, 12)).shape == (2,)


# ---------------------------------------------------------------------------------------------- torchmetrics
def test_metric_classes_accumulate_the_per_image_mean():
    gt = _photos(48)
    recon = _degrade(gt, seed=9)
    for metric, per_image in (
        (PixCorr(chain="native"), pixcorr_per_image(recon, gt, chain="native")),
        (SSIM(chain="native", layout="columns"), ssim_per_image(recon, gt, chain="native", layout="columns")),
        (PSNR(), psnr_per_image(recon, gt)),
    ):
        metric.update(recon[:1], gt[:1])
        metric.update(recon[1:], gt[1:])
        assert metric.compute().item() == pytest.approx(per_image.mean().item(), abs=1e-12)
        assert (
            metric.spec.id.endswith("@v2" if isinstance(metric, PSNR) else "@v1")
            and "native" in metric.spec.id
        )
