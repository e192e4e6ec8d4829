r"""What a site does in a round: local epochs with PmcmFL's losses, its prototypes, and its test metrics.

Bao et al., arXiv 2312.13508 (official code ``ClientTrainer``/``BaseTrainer``). A batch's training loss:

.. math::
    L = C \cdot \mathrm{BCE}(\mathrm{head}(\mathrm{fuse}(\tilde r)), y)
      + \lambda_f L_{con}(z, P^{fusion}_{c})
      + \lambda_u (L_{con}(r^{img}, P^{img}_c) + L_{con}(r^{txt}, P^{txt}_c))

with :math:`\tilde r` the representations whose missing modalities are filled (:func:`fill_missing`: the
prototype of the sample's class ``c`` for PmcmFL, the "task-calibrated" loss), ``z`` the fused
representation, :math:`L_{con}` :func:`~brainbench.federated.prototypes.prototype_contrast`,
:math:`\lambda_f = 0.01` and :math:`\lambda_u = 10^{-8}` from round 2 (image and caption terms only over
samples that have that modality). PmcmFL trains three loaders per epoch (complete, image-only, text-only);
here each batch mixes the site's samples and the fill acts per sample, which sums the same terms.

**Test-time masks without labels.** PmcmFL's released code does not say which class's prototype stands in at
uni-modal inference. Here: the class whose global **fMRI prototype** is nearest (cosine) to the sample's
fMRI representation, so fMRI-only decoding uses only the fMRI and the library.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from brainbench.federated.config import FederatedConfig
from brainbench.federated.model import SharedDecoder, SiteInputs, fill_missing
from brainbench.federated.partition import missing_masks
from brainbench.federated.prototypes import MODALITIES, class_prototypes, prototype_contrast
from brainbench.federated.site_data import SiteData, Trials


def site_seed(config: FederatedConfig, site: int, *salt: int) -> int:
    """A seed for ``(run seed, site, *salt)``, the same in every process."""
    return int(np.random.SeedSequence([config.seed, site, *salt]).generate_state(1)[0])


def training_masks(site: SiteData, config: FederatedConfig) -> dict[int, dict[str, torch.Tensor]]:
    """Per subject of the site, which training trials keep their image and caption (fixed for the run)."""
    masks = {}
    for subject, trials in site.train.items():
        has_image, has_text = missing_masks(
            len(trials), config.missing, seed=site_seed(config, site.site, subject)
        )
        masks[subject] = {"image": torch.from_numpy(has_image), "text": torch.from_numpy(has_text)}
    return masks


def trainable_rows(masks: Mapping[str, torch.Tensor], config: FederatedConfig) -> torch.Tensor:
    """The training rows a method uses: all, or only complete ones (``fedavg-pairs``)."""
    keep = torch.ones_like(masks["image"])
    if config.method == "fedavg-pairs":
        keep = masks["image"] & masks["text"]
    return torch.nonzero(keep).flatten()


def modality_counts(site: SiteData, config: FederatedConfig) -> dict[str, float]:
    """Samples having each modality (the prototype aggregation weights) and ``total`` (FedAvg's weight)."""
    counts = dict.fromkeys((*MODALITIES, "total"), 0.0)
    for masks in training_masks(site, config).values():
        rows = trainable_rows(masks, config)
        image, text = masks["image"][rows], masks["text"][rows]
        counts["fmri"] += len(rows)
        counts["total"] += len(rows)
        counts["image"] += float(image.sum())
        counts["text"] += float(text.sum())
        counts["fusion"] += float((image & text).sum())
    return counts


def represent(
    shared: SharedDecoder,
    inputs: SiteInputs,
    subject: int,
    trials: Trials,
    rows: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The ``fmri``, ``image`` and ``text`` representations ``(len(rows), D)`` of ``trials[rows]``."""
    local = inputs({subject: trials.voxels[rows]})[subject]
    return shared.encode(local, trials.image[rows], trials.text[rows])


def train_site(
    shared: SharedDecoder,
    inputs: SiteInputs,
    site: SiteData,
    prototypes: Mapping[str, torch.Tensor],
    config: FederatedConfig,
    server_round: int,
) -> float:
    """Local epochs of one round; returns the mean training loss."""
    masks = training_masks(site, config)
    params = list(shared.parameters()) + list(inputs.parameters())
    optimiser = torch.optim.AdamW(
        params, lr=config.lr, betas=(0.9, 0.98), eps=1e-8, weight_decay=config.weight_decay
    )
    contrast = config.uses_contrast and server_round >= config.contrast_start_round
    generator = torch.Generator().manual_seed(site_seed(config, site.site, server_round))
    shared.train()
    inputs.train()
    losses = []
    for _ in range(config.local_epochs):
        batches = []
        for subject in site.train:
            rows = trainable_rows(masks[subject], config)
            rows = rows[torch.randperm(len(rows), generator=generator)]
            batches += [(subject, chunk) for chunk in rows.split(config.batch_size)]
        for i in torch.randperm(len(batches), generator=generator).tolist():
            subject, rows = batches[i]
            trials = site.train[subject]
            present = {m: masks[subject][m][rows] for m in ("image", "text")}
            classes = trials.classes[rows]
            reps = represent(shared, inputs, subject, trials, rows)
            filled = fill_missing(reps, present, config.fill, classes, prototypes, generator)
            fused = shared.fuse(filled)
            logits = shared.head(fused)
            labels = trials.labels[rows]
            loss = F.binary_cross_entropy_with_logits(logits, labels) * labels.shape[1]
            if contrast:
                loss = loss + config.contrast_weight * prototype_contrast(
                    fused, prototypes["fusion"][classes], config.temperature
                )
                for modality in ("image", "text"):
                    keep = present[modality]
                    if int(keep.sum()) > 1:
                        loss = loss + config.unimodal_contrast_weight * prototype_contrast(
                            reps[modality][keep], prototypes[modality][classes[keep]], config.temperature
                        )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else float("nan")


@torch.no_grad()
def site_prototypes(
    shared: SharedDecoder,
    inputs: SiteInputs,
    site: SiteData,
    previous: Mapping[str, torch.Tensor],
    config: FederatedConfig,
) -> dict[str, torch.Tensor]:
    """The site's library over its complete training samples (eval mode; absent classes keep ``previous``)."""
    shared.eval()
    inputs.eval()
    masks = training_masks(site, config)
    reps_all: dict[str, list[torch.Tensor]] = {m: [] for m in MODALITIES}
    labels_all = []
    for subject, trials in site.train.items():
        rows = torch.nonzero(masks[subject]["image"] & masks[subject]["text"]).flatten()
        if len(rows) == 0:
            continue
        reps = represent(shared, inputs, subject, trials, rows)
        reps["fusion"] = shared.fuse(reps)
        for m in MODALITIES:
            reps_all[m].append(reps[m])
        labels_all.append(trials.labels[rows])
    if not labels_all:
        return {m: previous[m].clone() for m in MODALITIES}
    labels = torch.cat(labels_all)
    return {m: class_prototypes(torch.cat(reps_all[m]), labels, previous[m]) for m in MODALITIES}


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Macro average precision over classes with at least one positive (``(N, C)`` scores and 0/1 labels).

    Example:
        >>> average_precision(torch.tensor([[0.9], [0.1], [0.5]]), torch.tensor([[1.0], [0.0], [1.0]]))
        1.0
    """
    values = []
    for c in range(labels.shape[1]):
        positives = labels[:, c] > 0
        if not bool(positives.any()):
            continue
        order = torch.argsort(scores[:, c], descending=True, stable=True)
        hits = positives[order].to(torch.float64)
        precision = torch.cumsum(hits, 0) / torch.arange(1, len(hits) + 1)
        values.append(float((precision * hits).sum() / hits.sum()))
    return float(np.mean(values))


@torch.no_grad()
def evaluate_site(
    shared: SharedDecoder,
    inputs: SiteInputs,
    site: SiteData,
    prototypes: Mapping[str, torch.Tensor],
    config: FederatedConfig,
) -> dict[str, float]:
    """Category decoding on the site's test samples, multimodal and fMRI-only.

    Returns ``top1_<mode>`` (the top logit is one of the scene's categories) and ``map_<mode>`` (macro
    average precision) for ``mode`` in ``multimodal``, ``fmri_only``, and ``num-examples``.
    """
    shared.eval()
    inputs.eval()
    generator = torch.Generator().manual_seed(site_seed(config, site.site, 10**6))
    logits: dict[str, list[torch.Tensor]] = {"multimodal": [], "fmri_only": []}
    labels = []
    for subject, trials in site.test.items():
        rows = torch.arange(len(trials))
        reps = represent(shared, inputs, subject, trials, rows)
        logits["multimodal"].append(shared.head(shared.fuse(reps)))
        absent = torch.zeros(len(rows), dtype=torch.bool)
        classes = None
        if config.fill == "prototype":
            similarity = F.normalize(reps["fmri"], dim=1) @ F.normalize(prototypes["fmri"], dim=1).T
            classes = similarity.argmax(dim=1)
        filled = fill_missing(
            reps, {"image": absent, "text": absent}, config.fill, classes, prototypes, generator
        )
        logits["fmri_only"].append(shared.head(shared.fuse(filled)))
        labels.append(trials.labels)
    truth = torch.cat(labels)
    out: dict[str, float] = {"num-examples": float(len(truth))}
    for mode, parts in logits.items():
        scores = torch.cat(parts)
        top = scores.argmax(dim=1)
        out[f"top1_{mode}"] = float(truth[torch.arange(len(top)), top].mean())
        out[f"map_{mode}"] = average_precision(scores, truth)
    return out
