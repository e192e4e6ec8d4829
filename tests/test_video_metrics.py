"""Video metrics: hand-computed SSIM/PSNR/N-way/CLIP-pcc cases, scikit-image parity, MinD-Video's N-way loop
as an independent reference, the world-CLIP columns and the papers' networks reported absent."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from skimage.color import rgb2gray
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from brainbench.backbones import video_networks as vn
from brainbench.backbones.networks import build_video_network, get_network, network_availability
from brainbench.errors import ConfigError, MissingFileError
from brainbench.eval.video_metrics import evaluate_video
from brainbench.metrics import video as vm
from brainbench.metrics.specs import parse_metric_id


def _clips(seed: int, shape: tuple[int, ...] = (2, 3, 24, 20, 3)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 256, shape, dtype=np.uint8)
    pred = np.clip(target.astype(int) + rng.integers(-60, 61, shape), 0, 255).astype(np.uint8)
    return pred, target


@pytest.fixture(scope="module")
def world_clip() -> vn.ClipVideoNetwork:
    return build_video_network(vn.WORLD_CLIP_ID)


@pytest.fixture(scope="module")
def world_clips() -> np.ndarray:
    from brainbench.world.stimuli import generate_stimuli

    images = generate_stimuli(6, seed=0, image_size=64).images
    return np.repeat(images[:, None], 4, axis=1)  # 6 static clips of 4 frames


# ---------------------------------------------------------------- SSIM / PSNR


def test_identical_clips_give_ssim_one_and_a_finite_psnr() -> None:
    _, target = _clips(0)
    for flavour in ("mindvideo", "neurons"):
        assert torch.allclose(
            vm.frame_ssim(target, target, flavour=flavour), torch.ones(2, 3, dtype=torch.float64)
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # skimage would warn (divide by zero) and return inf
        psnr = vm.frame_psnr(target, target)
        raw = vm.frame_psnr(target, target, identical="inf")
    assert torch.allclose(
        psnr, torch.full((2, 3), 10 * math.log10(255**2 * 3 * 24 * 20), dtype=torch.float64)
    )
    assert torch.isinf(raw).all()


@pytest.mark.parametrize("flavour", ["mindvideo", "neurons"])
def test_ssim_equals_skimage_frame_by_frame(flavour: str) -> None:
    pred, target = _clips(1)
    ours = vm.frame_ssim(pred, target, flavour=flavour, block_size=2)  # blocks straddle clips
    if flavour == "mindvideo":  # MindVideo ssim_metric
        ref = [
            [structural_similarity(p, t, data_range=255, channel_axis=-1) for p, t in zip(*c, strict=True)]
            for c in zip(pred, target, strict=True)
        ]
    else:  # NEURONS ssim_metric (channel_axis=-1 on the grey frame: 1-D SSIM down each column)
        ref = [
            [
                structural_similarity(
                    rgb2gray(p), rgb2gray(t), channel_axis=-1, gaussian_weights=True, sigma=1.5,
                    use_sample_covariance=False, data_range=1.0,
                )
                for p, t in zip(*c, strict=True)
            ]
            for c in zip(pred, target, strict=True)
        ]  # fmt: skip
    np.testing.assert_allclose(ours.numpy(), np.array(ref), rtol=0, atol=1e-10)
    assert 0.1 < ours.mean() < 0.99


def test_psnr_of_a_constant_offset_and_against_skimage() -> None:
    rng = np.random.default_rng(2)
    target = rng.integers(0, 200, (2, 2, 16, 16, 3), dtype=np.uint8)
    offset = vm.frame_psnr(target + np.uint8(5), target)
    assert torch.allclose(offset, torch.full((2, 2), 20 * math.log10(255 / 5), dtype=torch.float64))
    pred, target = _clips(3)
    ref = [
        [peak_signal_noise_ratio(t, p, data_range=255) for p, t in zip(*c, strict=True)]
        for c in zip(pred, target, strict=True)
    ]
    np.testing.assert_allclose(vm.frame_psnr(pred, target).numpy(), np.array(ref), rtol=1e-12)


def test_shapes_are_checked_and_frames_resampled() -> None:
    pred, target = _clips(4)
    with pytest.raises(ValueError, match="resample"):
        vm.frame_ssim(pred[:, :2], target)
    with pytest.raises(ValueError, match="uint8"):
        vm.frame_psnr(pred.astype(np.float32), target)
    clips = np.arange(8, dtype=np.uint8).reshape(1, 8, 1, 1, 1).repeat(3, axis=-1)
    assert vm.resample_frames(clips, 6)[0, :, 0, 0, 0].tolist() == [0, 2, 3, 4, 6, 7]
    assert vm.resample_frames(clips[:, :6], 3)[0, :, 0, 0, 0].tolist() == [1, 3, 5]


# ---------------------------------------------------------------- N-way (MinD-Video)


def _hand_case() -> tuple[torch.Tensor, torch.Tensor]:
    """10 classes; GT top-3 = {0, 1, 2}; on the reconstruction the best GT class (2, p=.2) is beaten by 2 of
    the 7 other classes (3 and 4), so M = 7, |B| = 2."""
    target = torch.tensor([[9.0, 8.0, 7.0, 1, 1, 1, 1, 1, 1, 1]])
    probs = torch.tensor([[0.01, 0.05, 0.20, 0.25, 0.30, 0.05, 0.04, 0.04, 0.03, 0.03]])
    return probs.log(), target


def test_nway_hand_computed_probabilities() -> None:
    pred, target = _hand_case()
    exact = {(2, 1): 1 - 2 / 7, (3, 1): math.comb(5, 2) / math.comb(7, 2), (3, 2): 1 - 1 / math.comb(7, 2)}
    for (n_way, top_k), value in exact.items():
        expected = vm.nway_expected_accuracy(pred, target, n_way=n_way, top_k=top_k)
        assert expected.item() == pytest.approx(value, abs=1e-12)
        sampled = vm.nway_accuracy(pred, target, n_way=n_way, top_k=top_k, trials=20000, seed=0).item()
        assert abs(sampled - value) < 4 * math.sqrt(value * (1 - value) / 20000)
    # the true class on top of the reconstruction always wins; a constant classifier ties and always loses
    assert vm.nway_accuracy(target, target, n_way=8).item() == 1.0
    assert vm.nway_accuracy(torch.zeros(1, 10), target, n_way=2).item() == 0.0


def _mindvideo_loop(
    probs: np.ndarray, gt: list[int], n_way: int, trials: int, rng: np.random.RandomState
) -> float:
    """``n_way_top_k_acc`` of MinD-Video (top-1), transcribed: draw distractors, try each GT class."""
    pick_range = [i for i in range(len(probs)) if i not in gt]
    corrects = 0
    for _ in range(trials):
        picked = rng.choice(pick_range, n_way - 1, replace=False)
        for gt_id in gt:
            if np.argsort(np.concatenate([[probs[gt_id]], probs[picked]]))[-1] == 0:
                corrects += 1
                break
    return corrects / trials


def test_nway_matches_the_mindvideo_loop_and_is_seeded() -> None:
    gen = torch.Generator().manual_seed(5)
    pred, target = torch.randn(6, 30, generator=gen) * 2, torch.randn(6, 30, generator=gen)
    rng = np.random.RandomState(0)
    probs, gts = torch.softmax(pred, -1).numpy(), target.topk(3).indices.tolist()
    loop = np.array([_mindvideo_loop(p, g, 5, 3000, rng) for p, g in zip(probs, gts, strict=True)])
    expected = vm.nway_expected_accuracy(pred, target, n_way=5).numpy()
    assert np.abs(loop - expected).max() < 0.04  # 4.4 sigma at p = 0.5 and 3000 trials
    ours = vm.nway_accuracy(pred, target, n_way=5, trials=3000, seed=42)
    assert torch.equal(ours, vm.nway_accuracy(pred, target, n_way=5, trials=3000, seed=42))
    assert not torch.equal(ours, vm.nway_accuracy(pred, target, n_way=5, trials=3000, seed=43))
    assert np.abs(ours.numpy() - expected).max() < 0.04


def test_nway_chance_and_refusals() -> None:
    assert vm.nway_chance(2) == pytest.approx(0.75)  # any of 3 GT classes beats 1 distractor
    assert vm.nway_chance(50) == pytest.approx(3 / 52)
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(4000, 60, generator=gen), torch.randn(4000, 60, generator=gen)
    for n_way in (2, 50):
        expected = vm.nway_expected_accuracy(pred, target, n_way=n_way).mean().item()
        assert expected == pytest.approx(vm.nway_chance(n_way), abs=0.01)
    with pytest.raises(ConfigError, match="non-GT classes"):
        vm.nway_accuracy(torch.zeros(1, 10), torch.zeros(1, 10), n_way=50)
    with pytest.raises(ConfigError, match="top_k < n_way"):
        vm.nway_accuracy(torch.zeros(1, 10), torch.zeros(1, 10), n_way=2, top_k=2)


# ---------------------------------------------------------------- CLIP-pcc


def test_clip_pcc_hand_computed_static_and_gated() -> None:
    flip = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]]])  # cosines: (0,1)=0, (1,2)=0, (0,2)=1
    assert vm.clip_pcc(flip, "adjacent").item() == pytest.approx(0.0)
    assert vm.clip_pcc(flip, "allpairs").item() == pytest.approx(1 / 3)
    static = torch.randn(1, 1, 8).expand(2, 5, 8)
    for variant in ("adjacent", "allpairs"):
        assert torch.allclose(vm.clip_pcc(static, variant), torch.ones(2, dtype=torch.float64))
    scores = torch.tensor([0.5, 0.6, 0.61], dtype=torch.float64)  # float64: 0.6 in float32 is above 0.6
    gated = vm.gated_clip_pcc(torch.tensor([0.9, 0.8, 0.7]), scores)
    assert gated.tolist() == pytest.approx([0.0, 0.0, 0.7])  # Mind-Animator: score <= 0.6 counts 0


def test_world_clip_static_clip_and_zero_shot_head(
    world_clip: vn.ClipVideoNetwork, world_clips: np.ndarray
) -> None:
    embeddings = world_clip.frame_embeddings(torch.from_numpy(world_clips.reshape(-1, 64, 64, 3)))
    pcc = vm.clip_pcc(embeddings.reshape(6, 4, -1))
    assert torch.allclose(pcc, torch.ones(6, dtype=torch.float64), atol=1e-6)
    assert len(world_clip.class_names) == 57
    assert world_clip.video_logits(torch.from_numpy(world_clips[:2])).shape == (2, 57)


# ---------------------------------------------------------------- specs, networks, all columns


def test_spec_ids_name_the_classifier_and_pin_the_protocol() -> None:
    spec = vm.nway_spec("frame", 50, "world-clip:v1")
    assert spec.id == "nway_frame_top1_50way/world-clip:v1@v1"
    assert vm.nway_spec("frame", 50, "vit-imagenet").id == "nway_frame_top1_50way/vit-imagenet@v1"
    assert {
        "n_way": 50,
        "top_k": 1,
        "trials": 100,
        "seed": 42,
        "gt_classes": 3,
    }.items() <= spec.params.items()
    gated = vm.clip_pcc_spec("adjacent", "world-clip:v1", gate="world-clip:v1")
    assert parse_metric_id(gated.id) == ("clip_pcc_gated0.6", "world-clip:v1+world-clip:v1", 1)
    assert vm.ssim_spec("neurons").params["colour"] == "grey bt709"


def test_paper_networks_are_absent_with_reasons() -> None:
    assert network_availability("world-clip:v1") == (True, "")
    for network_id in ("vit-imagenet", "videomae-kinetics", "vifi-clip:k400-base2novel", "ViT-B-32:openai"):
        available, reason = network_availability(network_id)
        if available:  # a machine with these weights cached
            continue
        assert reason
        with pytest.raises(MissingFileError, match=network_id):
            build_video_network(network_id)
    assert "google/vit-base-patch16-224" in get_network("vit-imagenet").repo
    with pytest.raises(ConfigError, match="image feature network"):
        build_video_network("effnet_lite0")


class _FakeProcessor:
    def __call__(
        self, images: list[np.ndarray] | None = None, return_tensors: str = "pt"
    ) -> dict[str, torch.Tensor]:
        batch = np.stack([np.stack(x) if isinstance(x, list) else x for x in images])
        return {"pixel_values": torch.from_numpy(batch).float()}


class _FakeModel:
    def __call__(self, pixel_values: torch.Tensor) -> object:
        means = pixel_values.flatten(1).mean(dim=1, keepdim=True)
        return type("Out", (), {"logits": torch.cat([means, -means], dim=1)})()


def test_hugging_face_adapters_pass_frames_and_read_logits() -> None:
    frames = torch.full((2, 4, 4, 3), 7, dtype=torch.uint8)
    assert vn.HFFrameClassifier(_FakeProcessor(), _FakeModel()).frame_logits(frames).tolist() == [[7, -7]] * 2
    built = []
    classifier = vn.HFVideoClassifier(_FakeProcessor(), lambda n: built.append(n) or _FakeModel())
    clips = torch.full((2, 3, 4, 4, 3), 5, dtype=torch.uint8)
    assert classifier.video_logits(clips).tolist() == [[5, -5]] * 2
    classifier.video_logits(clips)
    assert built == [3]  # one model per frame count


class _LevelClassifier:
    """A fake classifier over 30 classes: k = grey level // 9, logit_c = -|c - k| + 0.001 c (no ties)."""

    def frame_logits(self, frames: torch.Tensor) -> torch.Tensor:
        k = frames.float().flatten(1).mean(1, keepdim=True) // 9
        c = torch.arange(30.0)
        return -(c - k).abs() + 0.001 * c

    def video_logits(self, clips: torch.Tensor) -> torch.Tensor:
        return self.frame_logits(clips.flatten(1, 2))


def test_evaluate_video_columns(world_clip: vn.ClipVideoNetwork, world_clips: np.ndarray) -> None:
    result = evaluate_video(world_clips, world_clips, networks={"world-clip:v1": world_clip}, trials=50)
    for name in ("nway_frame_top1_50way", "nway_video_top1_2way", "clip_pcc_adjacent", "clip_pcc_allpairs"):
        assert result.values[f"{name}/world-clip:v1@v1"] == pytest.approx(1.0)
    assert result.values["clip_pcc_gated0.6/world-clip:v1+world-clip:v1@v1"] == pytest.approx(1.0)
    assert result.values["frame_ssim_mindvideo@v1"] == result.values["frame_ssim_neurons@v1"] == 1.0
    assert result.chance["nway_frame_top1_50way/world-clip:v1@v1"] == pytest.approx(3 / 52)
    for absent in (
        "nway_frame_top1_50way/vit-imagenet@v1",
        "nway_video_top1_2way/videomae-kinetics@v1",
        "clip_pcc_gated0.6/ViT-B-32:openai+vifi-clip:k400-base2novel@v1",
    ):
        assert absent not in result.values and "missing file" in result.absent[absent]
    assert set(result.values) == set(result.specs)

    # levels 0 (k=0, GT {0,1,2}) and 252 (k=28, GT {27,28,29}): a reconstruction at the other level has every
    # one of the 27 other classes above its best GT class (accuracy 0); an exact one has none (accuracy 1)
    target = np.zeros((4, 2, 16, 16, 3), dtype=np.uint8)
    target[1::2] = 252
    pred = target[[0, 1, 1, 0]]
    result = evaluate_video(
        pred, target, frame_classifiers=["fake"], video_classifiers=["fake"], clip_pcc_networks=[], gated=[],
        networks={"fake": _LevelClassifier()}, n_ways=(2, 10), trials=10,
    )  # fmt: skip
    for name in (
        "nway_frame_top1_2way",
        "nway_frame_top1_10way",
        "nway_video_top1_2way",
        "nway_video_top1_10way",
    ):
        assert result.values[f"{name}/fake@v1"] == 0.5
    assert result.chance["nway_video_top1_10way/fake@v1"] == pytest.approx(3 / 12)


class _Generic:
    """The world CLIP seen only through the plug-in protocols (no shared-embedding fast path)."""

    def __init__(self, net: vn.ClipVideoNetwork) -> None:
        self.frame_logits, self.video_logits = net.frame_logits, net.video_logits
        self.frame_embeddings, self.video_embeddings = net.frame_embeddings, net.video_embeddings


def test_shared_embedding_path_equals_the_protocol_path(
    world_clip: vn.ClipVideoNetwork, world_clips: np.ndarray
) -> None:
    pred = world_clips[[1, 2, 3, 4, 5, 0]].copy()
    pred[:, 1:] = world_clips[[2, 2, 0, 5, 1, 3], 1:]  # mixed clips: CLIP-pcc and the gate below 1
    kwargs = {"trials": 20, "clip_pcc_networks": [("adjacent", "w")], "gated": [("w", "w")], "block_size": 5}
    ids = {"frame_classifiers": ["w"], "video_classifiers": ["w"]}
    fast = evaluate_video(pred, world_clips, networks={"w": world_clip}, **ids, **kwargs)
    slow = evaluate_video(pred, world_clips, networks={"w": _Generic(world_clip)}, **ids, **kwargs)
    assert fast.values.keys() == slow.values.keys()
    for key, value in fast.values.items():
        assert value == pytest.approx(slow.values[key], abs=1e-6), key
    assert fast.values["clip_pcc_adjacent/w@v1"] < 0.99


def test_the_papers_clip_architecture_runs_with_random_weights() -> None:
    # NEURONS' CLIP-pcc network is ViT-B/32 (absent offline); the architecture built from its config runs the
    # same code path, and its column is named by what ran ("ViT-B-32:random"), never by the paper's id
    assert network_availability("ViT-B-32:random") == (True, "")
    torch.manual_seed(0)
    net = build_video_network("ViT-B-32:random")
    target = np.random.default_rng(6).integers(0, 256, (2, 3, 32, 32, 3), dtype=np.uint8)
    target[1] = target[1, :1]  # clip 1 is static
    pcc = vm.clip_pcc(net.frame_embeddings(torch.from_numpy(target.reshape(6, 32, 32, 3))).reshape(2, 3, -1))
    assert pcc[1].item() == pytest.approx(1.0, abs=1e-5) and pcc[0].item() < 1.0
    result = evaluate_video(
        target, target, frame_classifiers=[], video_classifiers=[], gated=[],
        clip_pcc_networks=[("adjacent", "ViT-B-32:random")], networks={"ViT-B-32:random": net},
    )  # fmt: skip
    expected = {
        "frame_ssim_mindvideo@v1": 1.0,
        "frame_ssim_neurons@v1": 1.0,
        "frame_psnr@v1": 10 * math.log10(255**2 * 3 * 32 * 32),
        "clip_pcc_adjacent/ViT-B-32:random@v1": pcc.mean().item(),
    }
    assert result.values == pytest.approx(expected, abs=1e-6)
