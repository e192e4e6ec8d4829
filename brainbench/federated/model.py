"""PmcmFL's network adapted to brain decoding: per-subject fMRI inputs, a federated trunk, fusion and head.

Bao et al., arXiv 2312.13508 (IEEE TNNLS), official code ``beit3_modeling.py``: each modality's
representation (BEiT-3's image and text CLS) is layer-normalised, concatenated, fused by a linear layer and
``tanh``, and a head ``Linear -> LayerNorm -> GELU -> Linear`` gives one logit per class. Here the modalities
are the fMRI of one trial, the stimulus's image embedding and its caption embedding (the world CLIP's
``clip_image`` and ``clip_text``); the encoders are small because the inputs are already embeddings:

* fMRI: a **subject-specific** ``Linear(V_s -> local_dim)`` (:class:`SiteInputs`, stays on its site: voxel
  counts differ per subject), then the shared ``LayerNorm -> GELU -> Linear(local_dim -> D)``;
* image and caption: a shared ``Linear(E -> D)`` each;
* fusion: ``tanh(Linear(3D -> D)(concat(LN(f), LN(i), LN(t))))``; head as PmcmFL's, ``C`` classes.

A missing modality's representation is replaced before the fusion (:func:`fill_missing`): by the global
prototype of the sample's class (PmcmFL's "prototype mask"), by zeros or by noise (the baselines).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from brainbench.data.multisubject import subject_key
from brainbench.federated.config import FederatedConfig


class SharedDecoder(nn.Module):
    """Everything the sites federate: fMRI trunk, image and caption encoders, fusion, head.

    Shapes: ``fmri_local`` ``(B, local_dim)``, ``image``/``text`` ``(B, E)`` -> representations ``(B, D)``,
    logits ``(B, C)``.
    """

    def __init__(
        self, local_dim: int, feature_dim: int, embed_dim: int, hidden_dim: int, n_classes: int
    ) -> None:
        super().__init__()
        self.fmri = nn.Sequential(nn.LayerNorm(local_dim), nn.GELU(), nn.Linear(local_dim, embed_dim))
        self.image = nn.Linear(feature_dim, embed_dim)
        self.text = nn.Linear(feature_dim, embed_dim)
        self.norms = nn.ModuleDict({m: nn.LayerNorm(embed_dim) for m in ("fmri", "image", "text")})
        self.fusion = nn.Linear(3 * embed_dim, embed_dim)
        self.head = nn.Sequential(
            nn.Linear(embed_dim, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, n_classes),
        )

    def encode(
        self, fmri_local: torch.Tensor, image: torch.Tensor, text: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The three modality representations ``{"fmri", "image", "text"}``, each ``(B, D)``."""
        return {"fmri": self.fmri(fmri_local), "image": self.image(image), "text": self.text(text)}

    def fuse(self, reps: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """PmcmFL's fusion of (possibly filled) representations: ``(B, D)``."""
        joined = torch.cat([self.norms[m](reps[m]) for m in ("fmri", "image", "text")], dim=1)
        return torch.tanh(self.fusion(joined))


class SiteInputs(nn.Module):
    """The subject-specific fMRI input layers of one site (never sent anywhere)."""

    def __init__(self, n_voxels: Mapping[int, int], local_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleDict({subject_key(s): nn.Linear(v, local_dim) for s, v in n_voxels.items()})

    def forward(self, voxels: Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """``{subject: (B_s, V_s)}`` -> ``{subject: (B_s, local_dim)}``."""
        return {s: self.layers[subject_key(s)](v) for s, v in voxels.items()}


def fill_missing(
    reps: dict[str, torch.Tensor],
    present: Mapping[str, torch.Tensor],
    fill: str,
    classes: torch.Tensor | None = None,
    prototypes: Mapping[str, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Replace the rows of missing modalities.

    Args:
        reps: ``{"fmri", "image", "text"}`` -> ``(B, D)``.
        present: ``{"image", "text"}`` -> ``(B,)`` bool, ``False`` where that modality is missing.
        fill: ``prototype`` (the global prototype of ``classes``, PmcmFL's mask), ``zero`` or ``random``
            (standard normal, as PmcmFL without ``--prototype_as_missing_modal``).
        classes: ``(B,)`` the class whose prototype stands in (training: the sample's own class).
        prototypes: the library ``{modality: (C, D)}`` (``prototype`` fill).
        generator: the noise's generator (``random`` fill).
    """
    out = dict(reps)
    for modality, keep in present.items():
        if bool(keep.all()):
            continue
        rep = reps[modality]
        if fill == "prototype":
            assert prototypes is not None and classes is not None
            stand_in = prototypes[modality][classes].to(rep.dtype).detach()
        elif fill == "zero":
            stand_in = torch.zeros_like(rep)
        elif fill == "random":
            stand_in = torch.randn(rep.shape, generator=generator, dtype=rep.dtype)
        else:
            raise ValueError(f"unknown fill {fill!r}")
        out[modality] = torch.where(keep[:, None], rep, stand_in)
    return out


def n_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def build_shared(config: FederatedConfig) -> SharedDecoder:
    """The federated part of the network, initialised from the run seed (what the server starts from)."""
    torch.manual_seed(config.seed)
    return SharedDecoder(
        config.local_dim, config.feature_dim, config.embed_dim, config.hidden_dim, config.n_classes
    )
