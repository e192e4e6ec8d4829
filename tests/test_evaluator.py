import math

import pytest
import torch

from brainbench.errors import ConfigError
from brainbench.eval.evaluator import evaluate
from brainbench.metrics.specs import MetricSpec, parse_metric_id


def test_evaluate_names_values_and_chance():
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(40, 3, 8, generator=gen)
    image = torch.randn(40, 8, generator=gen)
    predictions = {"clip_tokens": tokens.clone(), "clip_image": image + 0.1, "frames": torch.zeros(40, 2)}
    targets = {"clip_tokens": tokens, "clip_image": image, "clip_text": torch.zeros(40, 8)}
    result = evaluate(predictions, targets, "world-clip-v1", pool=30, draws=4)
    # 2 predictions x (2 directions x 2 k x 2 pooled variants + 2 full-set + 1 two-way) = 2 x 11
    assert len(result.values) == len(result.specs) == len(result.chance) == 22
    b2i = "retrieval_b2i_top1_subset30/world-clip-v1.clip_tokens@v1"
    assert result.values[b2i] == 1.0 and result.chance[b2i] == pytest.approx(1 / 30)
    assert result.times_chance(b2i) == pytest.approx(30.0)
    assert result.specs[b2i].params["pool"] == 30 and result.specs[b2i].params["n_items"] == 40
    assert result.chance["retrieval_i2b_top5_perquery30/world-clip-v1.clip_image@v1"] == pytest.approx(5 / 30)
    assert result.chance["retrieval_i2b_top1_full/world-clip-v1.clip_image@v1"] == pytest.approx(1 / 40)
    assert result.chance["identification_2way/world-clip-v1.clip_image@v1"] == 0.5
    for metric_id, spec in result.specs.items():
        assert spec.id == metric_id and spec.higher_is_better
        name, network, version = parse_metric_id(metric_id)
        assert network.rsplit(".", 1)[0] == "world-clip-v1" and version == 1
        assert 0.0 <= result.values[metric_id] <= 1.0 and not math.isnan(result.values[metric_id])


def test_evaluate_hand_case_direction():
    # same geometry as tests/test_retrieval.py: brain2image 0.5, image2brain 1.0
    def unit(degrees):
        r = torch.tensor(degrees) * math.pi / 180
        return torch.stack([torch.cos(r), torch.sin(r)], 1)

    result = evaluate(
        {"clip_image": unit([10.0, 40.0, 170.0, 200.0])},
        {"clip_image": unit([0.0, 90.0, 180.0, 270.0])},
        "toy",
        pool=4,
        draws=2,
    )
    assert result.values["retrieval_b2i_top1_full/toy.clip_image@v1"] == 0.5
    assert result.values["retrieval_i2b_top1_full/toy.clip_image@v1"] == 1.0
    assert result.values["retrieval_b2i_top1_subset4/toy.clip_image@v1"] == 0.5
    assert result.values["retrieval_i2b_top1_perquery4/toy.clip_image@v1"] == 1.0
    assert not any("top5" in metric_id for metric_id in result.values)  # pool 4: no top-5 columns


def test_evaluate_refuses_silent_pool_and_bad_names():
    with pytest.raises(ConfigError, match="pool=min"):
        evaluate({"clip_image": torch.randn(10, 4)}, {"clip_image": torch.randn(10, 4)}, "net")
    with pytest.raises(ConfigError, match="rename"):
        evaluate({"a.b": torch.randn(10, 4)}, {"a.b": torch.randn(10, 4)}, "net", pool=10)


def test_spec_grammar():
    spec = MetricSpec("x", "", 2, False, {"pool": 3})
    assert spec.id == "x@v2" and parse_metric_id("x@v2") == ("x", "", 2)
    assert spec.with_network("hf-hub:org/model").id == "x/hf-hub:org/model@v2"
    assert parse_metric_id("x/hf-hub:org/model@v2") == ("x", "hf-hub:org/model", 2)
    with pytest.raises(TypeError):
        spec.params["pool"] = 4  # frozen mapping
    for bad in ("x", "x@2", "x/y@v", "/y@v1", "x@v1/y"):
        with pytest.raises(ConfigError):
            parse_metric_id(bad)
    with pytest.raises(ConfigError):
        MetricSpec("a/b", "", 1, True)
    with pytest.raises(ConfigError):
        MetricSpec("a", "n", 0, True)
