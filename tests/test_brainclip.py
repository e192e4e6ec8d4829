"""BrainCLIP: shapes, the InfoNCE with shared positives against hand computations, the KL, the alpha = 0
ablation, save/load, configs. methods.md §3 (no released code: the loss is the abstract's
NCE(f, image) + alpha NCE(f, text) + beta KL).
"""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from bench_helpers import tiny_config, tiny_request

from brainbench.errors import ConfigError
from brainbench.methods import load_method_config
from brainbench.methods.brainclip import BrainCLIP, gaussian_kl, same_target_labels, symmetric_nce

SHAPES = {"clip_image": (8,), "clip_class_text": (8,)}  # GOD-style: class prompts, no captions
NSD_SHAPES = {"clip_image": (8,), "clip_text": (8,)}  # NSD-style: captions


def tiny_model(**overrides):
    torch.manual_seed(0)
    return BrainCLIP(**({"n_voxels": 30, "target_shapes": SHAPES, "hidden": 16} | overrides))


def batch(n=6, n_classes=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    classes = torch.randn(n_classes, 8, generator=gen)
    return {
        "voxels": torch.randn(n, 30, generator=gen),
        "clip_image": torch.randn(n, 8, generator=gen),
        "clip_class_text": classes[torch.arange(n) % n_classes],
        "stim_id": torch.arange(n),
    }


@pytest.mark.parametrize("mapper", ["vae", "mlp"])
def test_forward_shapes_and_eval_is_deterministic(mapper):
    model = tiny_model(mapper=mapper).eval()
    voxels = torch.randn(4, 30)
    out = model(voxels)
    assert {k: v.shape for k, v in out.items()} == {"clip_image": (4, 8)}  # no caption target on GOD
    assert model.predicted_names() == ("clip_image",)
    torch.testing.assert_close(out["clip_image"], model(voxels)["clip_image"], rtol=0, atol=0)
    mu, logvar = model.encode(voxels)
    torch.testing.assert_close(out["clip_image"], mu)  # mu at evaluation
    assert (logvar is None) == (mapper == "mlp")
    nsd = tiny_model(mapper=mapper, target_shapes=NSD_SHAPES, text_target="clip_text").eval()
    out = nsd(voxels)
    assert {k: v.shape for k, v in out.items()} == {"clip_image": (4, 8), "clip_text": (4, 8)}
    assert nsd.predicted_names() == ("clip_image", "clip_text")
    # shared embedding by default: the text prediction is the image prediction
    torch.testing.assert_close(out["clip_text"], out["clip_image"], rtol=0, atol=0)


def test_vae_samples_in_training_with_its_variance():
    model = tiny_model(dropout=0.0).train()
    voxels = torch.randn(3, 30)
    mu, logvar = model.encode(voxels)
    torch.manual_seed(5)
    sample = model(voxels)["clip_image"]
    torch.manual_seed(5)
    eps = torch.randn_like(mu)
    torch.testing.assert_close(sample, mu + eps * (0.5 * logvar).exp())
    assert not torch.allclose(sample, mu)
    mlp = tiny_model(mapper="mlp", dropout=0.0).train()
    assert torch.equal(mlp(voxels)["clip_image"], mlp(voxels)["clip_image"])


def _manual_nce(pred, target, scale):
    """Symmetric InfoNCE where every item with an identical target is a positive, by explicit loops."""
    n = len(pred)
    p, t = F.normalize(pred, dim=-1), F.normalize(target, dim=-1)
    logits = [[scale * float(p[i] @ t[j]) for j in range(n)] for i in range(n)]
    same = [[bool(torch.equal(target[i], target[j])) for j in range(n)] for i in range(n)]

    def term(rows):
        total = 0.0
        for i in range(n):
            lse = math.log(sum(math.exp(x) for x in rows[i]))
            pos = [j for j in range(n) if same[i][j]]
            total += -sum(rows[i][j] - lse for j in pos) / len(pos)
        return total / n

    return (term(logits) + term([[logits[j][i] for j in range(n)] for i in range(n)])) / 2


def test_symmetric_nce_matches_hand_computation_with_shared_positives():
    b = batch(n=6, n_classes=3)
    pred = torch.randn(6, 8, dtype=torch.float64)
    text = b["clip_class_text"].double()
    assert symmetric_nce(pred, text, 7.0).item() == pytest.approx(_manual_nce(pred, text, 7.0))
    labels = same_target_labels(text)
    assert torch.equal(labels.sum(1), torch.ones(6, dtype=torch.float64)) and labels[0, 3] == 0.5
    # distinct targets: CLIP's loss, with or without shared positives
    image = b["clip_image"].double()
    logits = 7 * F.normalize(pred, dim=-1) @ F.normalize(image, dim=-1).T
    plain = (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.T, torch.arange(6))) / 2
    torch.testing.assert_close(symmetric_nce(pred, image, 7.0), plain)
    torch.testing.assert_close(symmetric_nce(pred, image, 7.0, share_positives=False), plain)


def test_gaussian_kl_matches_torch_distributions():
    mu, logvar = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(
        gaussian_kl(mu, logvar), torch.distributions.kl_divergence(q, p).sum(-1).mean()
    )


def test_loss_is_image_plus_alpha_text_plus_beta_kl():
    model = tiny_model(alpha=0.7, beta=0.01).eval()
    b = batch()
    terms = model.loss_terms(b, "val")[0]
    expected = terms["image_nce"] + 0.7 * terms["text_nce"] + 0.01 * terms["kl"]
    torch.testing.assert_close(terms["loss"], expected)
    assert terms["kl"] > 0


def test_alpha_zero_is_the_image_only_ablation():
    model = tiny_model(alpha=0.0).eval()
    b = batch()
    other = b | {"clip_class_text": torch.randn(6, 8)}
    loss = model.loss_terms(b, "val")[0]["loss"]
    torch.testing.assert_close(loss, model.loss_terms(other, "val")[0]["loss"])
    mu, logvar = model.encode(b["voxels"])
    expected = symmetric_nce(mu, b["clip_image"], model.logit_scale()) + 1e-3 * gaussian_kl(mu, logvar)
    torch.testing.assert_close(loss, expected)


def test_text_head_starts_as_identity_and_temperature_options():
    model = tiny_model(text_head=True, target_shapes=NSD_SHAPES, text_target="clip_text").eval()
    out = model(torch.randn(2, 30))
    torch.testing.assert_close(out["clip_text"], out["clip_image"])
    assert model.text_proj is not None and "text_proj.weight" in model.state_dict()
    learnable = tiny_model(temperature=0.05)
    assert learnable.log_logit_scale.requires_grad
    assert learnable.logit_scale().item() == pytest.approx(20.0)
    fixed = tiny_model(learn_temperature=False, temperature=0.2)
    assert "log_logit_scale" not in dict(fixed.named_parameters())
    assert fixed.logit_scale().item() == pytest.approx(5.0)
    big = tiny_model(temperature=1e-4)
    assert big.logit_scale().item() == pytest.approx(100.0)  # clamped as in CLIP


def test_config_errors():
    with pytest.raises(ConfigError, match="needs targets clip_image and clip_text"):
        tiny_model(text_target="clip_text")
    with pytest.raises(ConfigError, match="pooled embedding"):
        tiny_model(target_shapes={"clip_image": (8,), "clip_class_text": (4,)})
    with pytest.raises(ConfigError, match="'vae' or 'mlp'"):
        tiny_model(mapper="flow")


@pytest.mark.parametrize("mapper", ["vae", "mlp"])
def test_loss_decreases_on_a_fixed_batch(mapper):
    model = tiny_model(mapper=mapper, dropout=0.0).eval()  # eval: mu, so the objective is fixed
    b = batch(n=8, n_classes=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = model.loss_terms(b, "val")[0]["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_save_load_round_trip(tmp_path):
    model = tiny_model(
        text_head=True, learn_temperature=False, target_shapes=NSD_SHAPES, text_target="clip_text"
    ).eval()
    with torch.no_grad():
        model.text_proj.weight.add_(0.1)
    model.save_pretrained(tmp_path / "model")
    loaded = BrainCLIP.load_pretrained(tmp_path / "model", n_voxels=30)
    voxels = torch.randn(3, 30)
    for name in ("clip_image", "clip_text"):
        torch.testing.assert_close(loaded(voxels)[name], model(voxels)[name], rtol=0, atol=0)
    assert loaded.hparams.text_head and loaded.hparams.text_target == "clip_text"


def test_configs_match_the_documented_defaults():
    world = load_method_config("brainclip", "world")
    assert world["dataset"] == "world-god"
    assert world["data"]["targets"] == ["clip_image", "clip_class_text"]
    assert world["model"]["init_args"]["text_target"] == "clip_class_text"
    assert world["model"]["init_args"]["alpha"] > 0
    assert world["generator"] == {"kind": "world-decoder", "inputs": {"clip_image": "clip_image"}}
    nsd = load_method_config("brainclip", "nsd")
    assert nsd["model"]["init_args"]["text_target"] == "clip_text" and "clip_text" in nsd["data"]["targets"]
    god = load_method_config("brainclip", "god")
    assert god["data"]["backbone"] == "ViT-L-14:openai"


def test_describe_god_scale():
    from brainbench.describe import describe

    info = describe("brainclip", "god")
    assert info["n_voxels"] == 4466 and info["target_shapes"]["clip_image"] == (768,)
    h, v, d = 1024, 4466, 768
    assert info["n_params"] == (v + 1) * h + 2 * h + (h + 1) * h + 2 * h + 2 * (h + 1) * d + 1


@pytest.mark.slow
def test_tiny_world_god_end_to_end(tmp_path: Path) -> None:
    """Tiny GOD world through ``run_bench``: zero-shot columns are produced, the model round-trips."""
    from brainbench.bench import run_bench

    config = tiny_config(tmp_path, "brainclip", epochs=3, init_args={"hidden": 32})
    request = tiny_request(tmp_path, "brainclip", dataset="world-god", config=config, val_fraction=None)
    row, result = run_bench(request)
    zero_shot = [k for k in result.values if k.startswith("zeroshot_top1_") and k.endswith(".clip_image@v1")]
    assert zero_shot and 0 <= result.values[zero_shot[0]] <= 1
    loaded = BrainCLIP.load_pretrained(tmp_path / "runs" / row["run_id"] / "model")
    assert loaded.hparams.hidden == 32
