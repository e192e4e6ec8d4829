"""Every metric class: built from its column id, equal to its functional form, and the same under DDP.

The DDP check is torchmetrics' own recipe: two gloo processes on CPU (forked), each updating with its share of
the rows (an uneven split), ``compute`` syncing the states, and the value compared with one process updating
with every row. Inputs are rebuilt from fixed seeds in every process, so nothing large crosses a pipe.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import socket
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from brainbench.errors import ConfigError
from brainbench.eval.feature_metrics import LPIPSDistance, lpips_distance_per_item
from brainbench.metrics import video
from brainbench.metrics.base import SpecMetric
from brainbench.metrics.correlation import correlation_distance
from brainbench.metrics.identification import two_way_identification
from brainbench.metrics.image_metrics import pixcorr, psnr_per_image, ssim
from brainbench.metrics.registry import METRICS, build_metric, metric_family
from brainbench.metrics.retrieval import retrieval_accuracy
from brainbench.metrics.text_retrieval import text_retrieval_accuracy
from brainbench.metrics.trials import SingleTrialRetrieval, distinct_stimulus_accuracy
from brainbench.metrics.zeroshot import ZeroShotTask, svc_zero_shot_accuracy, zero_shot_accuracy

Inputs = tuple[torch.Tensor, ...]


def _randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _pair(seed: int, n: int, d: int, noise: float = 1.0) -> Inputs:
    target = _randn(seed, n, d)
    return target + noise * _randn(seed + 1, n, d), target


def _images(seed: int, n: int, side: int = 16) -> Inputs:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)
    pred = np.clip(target.astype(int) + rng.integers(-60, 61, target.shape), 0, 255).astype(np.uint8)
    return torch.from_numpy(pred), torch.from_numpy(target)


def _clips(seed: int) -> Inputs:
    pred, target = _images(seed, 10, 16)
    return pred.reshape(5, 2, 16, 16, 3), target.reshape(5, 2, 16, 16, 3)


def _task() -> ZeroShotTask:
    classes, samples = _randn(7, 6, 8), _randn(8, 30, 8)
    labels = torch.randint(0, 6, (30,), generator=torch.Generator().manual_seed(9))
    return ZeroShotTask(classes, labels, "a {}", "test", True, samples, torch.arange(6).repeat_interleave(5))


def _zero_shot_inputs() -> Inputs:
    task = _task()
    return task.class_embeddings[task.labels] + 0.8 * _randn(10, 30, 8), task.labels


def _gated_inputs() -> Inputs:
    frames = _randn(11, 6, 3, 8)
    frames[:3] = frames[:3, :1] + 0.1 * frames[:3]  # near-static clips pass the gate
    video_pred = F.normalize(frames.mean(dim=1), dim=-1)
    return frames, video_pred, F.normalize(video_pred + 0.3 * _randn(12, 6, 8), dim=-1)


def _lpips() -> SpecMetric:
    torch.manual_seed(0)  # the random backbone must be the same in every process
    return LPIPSDistance(random_backbone=True, batch_size=2)


def _lpips_inputs() -> Inputs:
    return torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(13)), torch.rand(
        5, 3, 32, 32, generator=torch.Generator().manual_seed(14)
    )


def _nway_inputs() -> Inputs:
    return 3 * _randn(15, 20, 12), _randn(16, 20, 12)


# name -> (metric factory, inputs (rows first), the functional form on all rows)
CASES: dict[str, tuple[Callable[[], SpecMetric], Callable[[], Inputs], Callable[[Inputs], float]]] = {
    "retrieval_subset": (
        lambda: build_metric("retrieval_b2i_top1_subset10/demo@v1", draws=3),
        lambda: _pair(1, 30, 8),
        lambda x: float(
            retrieval_accuracy(*x, direction="brain2image", variant="shared-subset", pool=10, draws=3)
        ),
    ),
    "retrieval_perquery": (
        lambda: build_metric("retrieval_i2b_top5_perquery10/demo@v1", draws=3),
        lambda: _pair(1, 30, 8),
        lambda x: float(
            retrieval_accuracy(*x, direction="image2brain", variant="per-query", top_k=5, pool=10, draws=3)
        ),
    ),
    "retrieval_full": (
        lambda: build_metric("retrieval_b2i_top1_full/demo@v1"),
        lambda: _pair(2, 30, 8),
        lambda x: float(retrieval_accuracy(*x, direction="brain2image", variant="full-set")),
    ),
    "text_retrieval": (
        lambda: build_metric("retrieval_t2b_top1_subset10/demo@v1", draws=4),
        lambda: _pair(3, 30, 8),
        lambda x: float(text_retrieval_accuracy(*x, direction="text2brain", pool=10, draws=4)),
    ),
    "identification": (
        lambda: build_metric("identification_2way/demo@v1"),
        lambda: _pair(4, 20, 6, noise=2.0),
        lambda x: float(two_way_identification(*x)),
    ),
    "zeroshot": (
        lambda: build_metric("zeroshot_top5_6way/demo@v1", task=_task()),
        _zero_shot_inputs,
        lambda x: float(zero_shot_accuracy(x[0], _task().class_embeddings, x[1], top_k=5)),
    ),
    "zeroshot_svc": (
        lambda: build_metric("zeroshot_svc_top1_6way/demo@v1", task=_task()),
        _zero_shot_inputs,
        lambda x: float(svc_zero_shot_accuracy(x[0], _task().class_samples, _task().sample_labels, x[1])),
    ),
    "pixcorr": (
        lambda: build_metric("pixcorr_native@v1"),
        lambda: _images(5, 6),
        lambda x: float(pixcorr(*x, chain="native")),
    ),
    "ssim": (
        lambda: build_metric("ssim_native@v1"),
        lambda: _images(6, 6),
        lambda x: float(ssim(*x, chain="native")),
    ),
    "psnr": (
        lambda: build_metric("psnr_native@v2"),
        lambda: _images(7, 6),
        lambda x: float(psnr_per_image(*x).mean()),
    ),
    "corrdist": (
        lambda: build_metric("corrdist/demo@v1"),
        lambda: _pair(8, 20, 10),
        lambda x: float(correlation_distance(*x)),
    ),
    "fid": (
        lambda: build_metric("fid/demo@v1", num_features=4),
        lambda: _pair(9, 30, 4, noise=0.5),
        lambda x: _numpy_fid(x[1].double().numpy(), x[0].double().numpy()),
    ),
    "frame_ssim_mindvideo": (
        lambda: build_metric("frame_ssim_mindvideo@v1"),
        lambda: _clips(10),
        lambda x: float(video.frame_ssim(*x, flavour="mindvideo").mean()),
    ),
    "frame_ssim_neurons": (
        lambda: build_metric("frame_ssim_neurons@v1"),
        lambda: _clips(11),
        lambda x: float(video.frame_ssim(*x, flavour="neurons").mean()),
    ),
    "frame_psnr": (
        lambda: build_metric("frame_psnr@v1"),
        lambda: _clips(12),
        lambda x: float(video.frame_psnr(*x).mean()),
    ),
    "nway": (
        lambda: build_metric("nway_frame_top1_5way/demo@v1", trials=50),
        _nway_inputs,
        lambda x: float(video.nway_accuracy(*x, n_way=5, trials=50).mean()),
    ),
    "clip_pcc": (
        lambda: build_metric("clip_pcc_allpairs/demo@v1"),
        lambda: (_randn(17, 6, 3, 8),),
        lambda x: float(video.clip_pcc(x[0], "allpairs").mean()),
    ),
    "clip_pcc_gated": (
        lambda: build_metric("clip_pcc_gated0.6/demo+gate@v1"),
        _gated_inputs,
        lambda x: float(
            video.gated_clip_pcc(video.clip_pcc(x[0], "adjacent"), (x[1] * x[2]).sum(dim=-1)).mean()
        ),
    ),
    "lpips": (_lpips, _lpips_inputs, lambda x: float(lpips_distance_per_item(*x, _lpips().model).mean())),
    "single_trial": (
        SingleTrialRetrieval,
        lambda: (*_pair(18, 20, 8), torch.arange(20) % 7),
        lambda x: float(distinct_stimulus_accuracy(*x)),
    ),
}


def _numpy_fid(real: np.ndarray, fake: np.ndarray) -> float:
    from scipy import linalg

    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((real.mean(0) - fake.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _split(inputs: Inputs, rank: int) -> Inputs:
    n = int(inputs[0].shape[0])
    cut = max(1, (2 * n) // 5)  # uneven: 40 % / 60 %
    rows = slice(0, cut) if rank == 0 else slice(cut, n)
    return tuple(x[rows] for x in inputs)


def _single(name: str) -> float:
    factory, make_inputs, _ = CASES[name]
    metric = factory()
    metric.update(*make_inputs())
    return float(metric.compute())


def _rank(rank: int, port: int, names: list[str], queue: multiprocessing.Queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    values = {}
    for name in names:
        factory, make_inputs, _ = CASES[name]
        metric = factory()
        metric.update(*_split(make_inputs(), rank))
        values[name] = float(metric.compute())  # syncs the states of both ranks
    dist.destroy_process_group()
    queue.put((rank, values))


@pytest.fixture(scope="module")
def ddp_values() -> dict[int, dict[str, float]]:
    """Every case computed by two forked gloo processes, each holding part of the rows."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    processes = [context.Process(target=_rank, args=(r, port, list(CASES), queue)) for r in range(2)]
    for process in processes:
        process.start()
    results = dict(queue.get(timeout=300) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_two_gloo_processes_give_the_single_process_value(name: str, ddp_values: dict) -> None:
    expected = _single(name)
    for rank in (0, 1):
        assert ddp_values[rank][name] == pytest.approx(expected, rel=1e-9, abs=1e-12), rank


@pytest.mark.parametrize("name", list(CASES))
def test_the_class_equals_its_functional_form(name: str) -> None:
    _, make_inputs, functional = CASES[name]
    tolerance = 1e-3 if name == "fid" else 1e-12  # FID: scipy's sqrtm against torchmetrics' eigenvalues
    assert _single(name) == pytest.approx(functional(make_inputs()), rel=tolerance, abs=tolerance)


def test_every_registered_family_builds_from_an_id_and_round_trips() -> None:
    ids = {
        "retrieval_b2i": "retrieval_b2i_top5_subset300/x.clip_image@v1",
        "retrieval_i2b": "retrieval_i2b_top1_full/x.clip_tokens@v1",
        "retrieval_b2t": "retrieval_b2t_top1_subset50/x.clip_text@v1",
        "retrieval_t2b": "retrieval_t2b_top1_subset50/x.clip_image@v1",
        "identification_2way": "identification_2way/effnet_lite0@v1",
        "zeroshot": "zeroshot_top1_6way/x.clip_image@v1",
        "zeroshot_svc": "zeroshot_svc_top5_6way/x.clip_tokens_cls@v1",
        "pixcorr": "pixcorr_mindeye@v1",
        "ssim": "ssim_braindiffuser_columns@v1",
        "psnr": "psnr_native@v2",
        "corrdist": "corrdist/swav@v1",
        "fid": "fid/world-clip:v1/clip_image@v1",
        "frame_ssim": "frame_ssim_neurons@v1",
        "frame_psnr": "frame_psnr@v1",
        "nway_frame": "nway_frame_top1_50way/world-clip:v1@v1",
        "nway_video": "nway_video_top1_2way/videomae-kinetics@v1",
        "clip_pcc_adjacent": "clip_pcc_adjacent/ViT-B-32:openai@v1",
        "clip_pcc_allpairs": "clip_pcc_allpairs/world-clip:v1@v1",
        "clip_pcc_gated0.6": "clip_pcc_gated0.6/ViT-B-32:openai+vifi-clip:k400-base2novel@v1",
        "lpips": "lpips/alex:v0.1@v1",
        "fid_inception": "fid_inception@v1",
    }
    assert set(ids) == set(METRICS.list())
    for family, metric_id in ids.items():
        assert metric_family(metric_id.split("/")[0].split("@")[0]) == family
        if family in ("lpips", "fid_inception"):
            continue  # need their networks' weights
        metric = build_metric(metric_id, task=_task(), num_features=128)
        assert metric.spec.id == metric_id
        assert metric.higher_is_better is metric.spec.higher_is_better
        assert math.isnan(metric.chance) or 0 < metric.chance <= 1
    with pytest.raises(ConfigError, match="no metric is registered"):
        build_metric("accuracy@v1")
    with pytest.raises(ConfigError, match="not a column"):
        build_metric("identification_2way/x@v2")  # version 2 does not exist
    with pytest.raises(ConfigError, match="not a brain<->image retrieval column"):
        build_metric("retrieval_b2i_top1_nonsense/x@v1")
