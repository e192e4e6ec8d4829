r"""BrainMCLIP: ROI-split fMRI aligned to intermediate and final CLIP layers, with cross-reconstruction.

Paper: Tian Xia, Zihan Ma, Xinlong Wang, Qing Liu, Xiaowei He, Tianming Liu, Yudan Ren 2025, "BrainMCLIP:
Brain Image Decoding with Multi-Layer feature Fusion of CLIP", arXiv 2510.19332. No code is public; the facts
come from the abstract and third-party summaries, so every choice the paper
leaves open is a constructor argument, its default stated here and in ``data_cards/methods/brainmclip.md``.

**Inputs** (the functional hierarchy): the voxel vector is split by the manifest's ROIs (``rois``, name ->
voxel indices) with ``fnmatch`` patterns. fMRI-Detail ``F_D`` = the voxels of ``detail_rois`` (default
``nsdgeneral/*``: "voxels from all visual regions", methods.md §4), fMRI-Semantic ``F_S`` = the voxels of
``semantic_rois`` (default ``floc-*/*``: floc-bodies, -faces, -places, -words).

**Targets**: CLIP-Detail ``c_D`` = the mean of the intermediate residual-stream tokens
``mean_{k in detail_layers} layer:k`` (ViT-L/14: layers 11-20 of 24; world CLIP: 2, 3 of 4), ``(T, W)``;
CLIP-Semantic = the final layer, ``clip_tokens`` ``(T, D)`` and its pooled embedding ``clip_image`` ``(D,)``.

**Model**: two branches ``x in {D, S}``, each an encoder ``E_x`` (Linear + LN + GELU + dropout, ``n_blocks``
residual blocks, a token head of rank ``token_rank``) giving a code ``b_x = E_x(F_x)`` ``(T, code_dim)``, a
per-token head ``P_x`` (LN + Linear) to its CLIP space, ``y_D = P_D(b_D)`` ``(T, W)``,
``y_S = P_S(b_S)`` ``(T, D)``, and a decoder ``D_x`` (per-token Linear to ``decoder_rank``, flatten, MLP)
back to the branch's voxels. The codes share one width, so either decoder reads either code.

**Loss** (weights ``w_*``; ``nce`` = bidirectional InfoNCE on L2-normalised flattened rows at ``temp``):

.. math::

    L = \sum_{x} \big[ w_{nce} \, nce(y_x, c_x) + w_{mse} \, \|y_x - c_x\|^2
        + w_{coarse} \, nce(pool(y_x), g_x) + w_{rec} \, \|D_x(b_x) - F_x\|^2 \big]
        + w_{cross} \big[ \|D_D(b_S) - F_S\|^2_{S \cap D} + \|D_S(b_D) - F_D\|^2_{S \cap D} \big]

Fine = token-level (the first two terms); coarse = global: ``pool(y_S)`` is the predicted CLS token against
``clip_image`` (ViT ``pool_type = tok``: ``clip_image`` is ``clip_tokens[:, 0]`` for ViT-L/14 openai and
the world CLIP), ``pool(y_D)`` the token mean against the mean of ``c_D``. Cross terms: the semantic code
through the Detail decoder reconstructs the semantic fMRI, ``F_hat_{S,C} = D_D(b_S)``, and vice versa
(methods.md §4), scored on the voxels both decoders output (``F_S``, inside ``F_D`` by default).

**Predictions**: ``clip_tokens`` = ``y_S`` (the evaluator's retrieval), ``clip_image`` = its CLS token,
``detail`` = ``y_D`` ``(T, W)`` (a world-decoder input).

Faithful: ROI-split inputs by the paper's ROI families, the mid-layer-mean and final-layer targets,
per-branch encoders and decoders with both cross-reconstruction terms, fine (token) + coarse (global)
alignment, no VAE pathway. Not faithful / unknown: the text branch (fMRI -> CLIP text) is omitted; the
widths, the token head, the loss forms (InfoNCE + MSE), their weights and temperature are our choices;
AdamW + OneCycle; the checkpoint is chosen on validation ``val_top1`` of ``clip_tokens``.

Example:
    >>> rois = {"floc-faces/FFA-1": [4, 5], "nsdgeneral/nsdgeneral": list(range(8))}
    >>> shapes = {"clip_tokens": (3, 8), "clip_image": (8,), "layer:2": (3, 6), "layer:3": (3, 6)}
    >>> model = BrainMCLIP(8, shapes, rois=rois, detail_layers=(2, 3), hidden=16, code_dim=8, token_rank=4)
    >>> {k: tuple(v.shape) for k, v in model(torch.randn(2, 8)).items()}
    {'clip_tokens': (2, 3, 8), 'clip_image': (2, 8), 'detail': (2, 3, 6)}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from brainbench.errors import ConfigError
from brainbench.methods.base import DecoderModule, adamw_one_cycle
from brainbench.methods.losses import flat_unit_rows, mixco_nce


def select_rois(rois: Mapping[str, Sequence[int]], patterns: Sequence[str], role: str) -> np.ndarray:
    """Sorted unique voxel indices of every ROI whose name matches one of ``patterns`` (``fnmatch``).

    Raises:
        ConfigError: a pattern matching no ROI (the message lists the available ROIs).
    """
    if isinstance(patterns, str):
        patterns = (patterns,)
    chosen: list[np.ndarray] = []
    for pattern in patterns:
        names = [name for name in rois if fnmatchcase(name, pattern)]
        if not names:
            raise ConfigError(
                f"brainmclip {role} pattern {pattern!r} matches no ROI of this dataset; available: "
                f"{', '.join(sorted(rois))}"
            )
        chosen += [np.asarray(rois[name], dtype=np.int64) for name in names]
    return np.unique(np.concatenate(chosen))


def pool_tokens(tokens: torch.Tensor, pool: Literal["cls", "mean"]) -> torch.Tensor:
    """``(B, T, D)`` -> ``(B, D)``: the CLS token (ViT ``pool_type = tok``) or the token mean."""
    return tokens[:, 0] if pool == "cls" else tokens.mean(dim=1)


def nce(pred: torch.Tensor, target: torch.Tensor, temp: float) -> torch.Tensor:
    """Bidirectional InfoNCE of flattened, L2-normalised rows (MindEye's ``mixco_nce`` without mixing)."""
    return mixco_nce(flat_unit_rows(pred), flat_unit_rows(target), temp)


class BranchEncoder(nn.Module):
    """``(B, V_x)`` voxels -> code ``(B, T, code_dim)``: MLP stem, residual blocks, low-rank token head.

    ``token_rank = r > 0``: ``Linear(h, T r)`` reshaped ``(T, r)`` then ``Linear(r, code_dim)`` per token
    (each token a rank-``r`` map of the hidden state); ``0``: a full ``Linear(h, T code_dim)``.
    """

    def __init__(
        self,
        n_in: int,
        hidden: int,
        n_blocks: int,
        n_tokens: int,
        code_dim: int,
        token_rank: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.n_tokens = n_tokens
        self.stem = nn.Sequential(
            nn.Linear(n_in, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout)
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout))
            for _ in range(n_blocks)
        )
        width = token_rank if token_rank > 0 else code_dim
        self.to_tokens = nn.Linear(hidden, n_tokens * width)
        self.token_proj = nn.Linear(token_rank, code_dim) if token_rank > 0 else nn.Identity()

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        """The code ``b`` of a batch."""
        x = self.stem(voxels)
        for block in self.blocks:
            x = x + block(x)
        return self.token_proj(self.to_tokens(x).view(len(voxels), self.n_tokens, -1))


class BranchDecoder(nn.Module):
    """Code ``(B, T, code_dim)`` -> voxels ``(B, V_x)``: per-token ``Linear(code_dim, r)``, flatten, MLP."""

    def __init__(self, n_tokens: int, code_dim: int, rank: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.LayerNorm(code_dim), nn.Linear(code_dim, rank))
        self.mlp = nn.Sequential(nn.Linear(n_tokens * rank, hidden), nn.GELU(), nn.Linear(hidden, n_out))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        """Reconstructed voxels of the branch."""
        return self.mlp(self.reduce(code).flatten(1))


class BrainMCLIP(DecoderModule):
    """Two ROI branches (Detail, Semantic) with cross-reconstruction and a fine + coarse loss.

    Args:
        n_voxels: voxels per sample.
        target_shapes: ``clip_tokens`` ``(T, D)``, ``clip_image`` ``(D,)`` and ``layer:<k>`` ``(T, W)`` for
            each ``k`` of ``detail_layers``.
        rois: manifest ROI name -> voxel indices (``build_method`` passes the dataset's).
        detail_rois: ``fnmatch`` patterns of the fMRI-Detail ROIs (default: all visual voxels,
            ``nsdgeneral/*``).
        semantic_rois: patterns of the fMRI-Semantic ROIs (default the floc families, ``floc-*/*``).
        detail_layers: backbone blocks averaged into CLIP-Detail (paper: 11-20 of ViT-L/14's 24).
        hidden: encoder width ``h``.
        n_blocks: residual blocks per encoder.
        code_dim: width of the codes ``b`` both decoders read.
        token_rank: rank of each token's map from the hidden state (0: a full ``Linear(h, T code_dim)``).
        decoder_rank: per-token width before a decoder flattens the code.
        decoder_hidden: decoder MLP width.
        dropout: dropout in the encoders.
        pool: how a token grid is pooled for the coarse term (``cls`` matches ViT ``pool_type = tok``).
        temp: InfoNCE temperature of the fine and coarse terms.
        w_nce: weight of the fine (token-grid) InfoNCE terms.
        w_mse: weight of the fine token MSE terms (they calibrate the predictions a generator reads).
        w_coarse: weight of the coarse (pooled) InfoNCE terms.
        w_recon: weight of each branch's self-reconstruction ``D_x(b_x) -> F_x``.
        w_cross: weight of the cross-reconstruction terms ``D_D(b_S) -> F_S`` and ``D_S(b_D) -> F_D``.
        max_lr: OneCycle peak learning rate of AdamW.
        weight_decay: AdamW weight decay on weight matrices.
        max_epochs: schedule length outside a trainer (a trainer's ``max_epochs`` takes precedence).
    """

    method_id = "brainmclip"
    method_version = "1"
    paper = "Xia et al. 2025, BrainMCLIP, arXiv 2510.19332 (no code released)"
    fidelity = (
        "from the abstract and summaries (no code): ROI-split Detail (all visual voxels) / Semantic (floc) "
        "branches aligned to the mean of intermediate CLIP layers and to the final layer, per-branch "
        "encoders and decoders with both cross-reconstruction terms, token-level + pooled losses, no VAE "
        "pathway; text branch omitted; widths, token head, loss forms, weights and temperature are "
        "documented choices"
    )
    predicts = ("clip_tokens", "clip_image", "detail")
    monitor = "val_top1"
    monitor_mode = "max"
    val_retrieval_target = "clip_tokens"

    def __init__(
        self,
        n_voxels: int,
        target_shapes: dict[str, tuple[int, ...]],
        rois: dict[str, list[int]] | None = None,
        detail_rois: tuple[str, ...] = ("nsdgeneral/*",),
        semantic_rois: tuple[str, ...] = ("floc-*/*",),
        detail_layers: tuple[int, ...] = (11, 12, 13, 14, 15, 16, 17, 18, 19, 20),
        hidden: int = 1024,
        n_blocks: int = 1,
        code_dim: int = 768,
        token_rank: int = 64,
        decoder_rank: int = 16,
        decoder_hidden: int = 1024,
        dropout: float = 0.3,
        pool: Literal["cls", "mean"] = "cls",
        temp: float = 0.05,
        w_nce: float = 1.0,
        w_mse: float = 0.1,
        w_coarse: float = 1.0,
        w_recon: float = 0.1,
        w_cross: float = 0.1,
        max_lr: float = 3e-4,
        weight_decay: float = 1e-2,
        max_epochs: int = 100,
    ) -> None:
        super().__init__(n_voxels, target_shapes)

    def predicted_names(self) -> tuple[str, ...]:
        """Predictions backed by a target of that name (``detail`` is checked against the layer targets)."""
        return ("clip_tokens", "clip_image")

    def detail_names(self) -> tuple[str, ...]:
        """The ``layer:<k>`` targets averaged into CLIP-Detail."""
        return tuple(f"layer:{int(k)}" for k in self.hparams.detail_layers)

    def configure_models(self) -> None:
        """Splits the voxels by ROI and builds both branches (encoder, CLIP head, decoder)."""
        hp = self.hparams
        if hp.rois is None:
            raise ConfigError(
                "brainmclip splits the voxels by ROI and needs `rois` (manifest ROI name -> voxel indices); "
                "build it through brainbench.methods.build_method, which passes the dataset manifest's ROIs"
            )
        if hp.pool not in ("cls", "mean"):
            raise ConfigError(f"brainmclip pool must be 'cls' or 'mean', not {hp.pool!r}")
        hp.rois = {str(name): [int(i) for i in idx] for name, idx in hp.rois.items()}  # JSON-clean init_args
        detail_idx = select_rois(hp.rois, hp.detail_rois, "detail_rois")
        semantic_idx = select_rois(hp.rois, hp.semantic_rois, "semantic_rois")
        for idx in (detail_idx, semantic_idx):
            if idx.min() < 0 or idx.max() >= self.n_voxels:
                raise ConfigError(
                    f"brainmclip: ROI indices fall outside the {self.n_voxels} voxels of the data"
                )
        shared = np.intersect1d(detail_idx, semantic_idx)
        if hp.w_cross > 0 and len(shared) == 0:
            raise ConfigError(
                "brainmclip cross-reconstruction compares the two decoders on voxels both branches hold, but "
                f"detail_rois {list(hp.detail_rois)} and semantic_rois {list(hp.semantic_rois)} share none; "
                "let fMRI-Detail cover all visual voxels (the paper's choice) or set w_cross: 0"
            )
        self.register_buffer("detail_idx", torch.from_numpy(detail_idx), persistent=False)
        self.register_buffer("semantic_idx", torch.from_numpy(semantic_idx), persistent=False)
        self.register_buffer("shared_in_detail", torch.from_numpy(np.searchsorted(detail_idx, shared)), False)
        self.register_buffer(
            "shared_in_semantic", torch.from_numpy(np.searchsorted(semantic_idx, shared)), False
        )

        missing = [n for n in self.detail_names() if n not in self.target_shapes]
        if not hp.detail_layers or missing:
            raise ConfigError(
                f"brainmclip detail_layers {list(hp.detail_layers)} need targets {missing or '?'}"
            )
        detail_shapes = {self.target_shapes[n] for n in self.detail_names()}
        if len(detail_shapes) != 1:
            raise ConfigError(f"brainmclip detail layers differ in shape: {sorted(detail_shapes)}")
        (self.detail_shape,) = detail_shapes
        n_tokens, dim = self.target_shapes["clip_tokens"]
        if self.detail_shape[0] != n_tokens:
            raise ConfigError(
                f"layer tokens {self.detail_shape} and clip_tokens {(n_tokens, dim)} differ in T"
            )

        def encoder(n_in: int) -> BranchEncoder:
            return BranchEncoder(
                n_in, hp.hidden, hp.n_blocks, n_tokens, hp.code_dim, hp.token_rank, hp.dropout
            )

        def decoder(n_out: int) -> BranchDecoder:
            return BranchDecoder(n_tokens, hp.code_dim, hp.decoder_rank, hp.decoder_hidden, n_out)

        self.encoder_detail, self.encoder_semantic = encoder(len(detail_idx)), encoder(len(semantic_idx))
        self.head_detail = nn.Sequential(
            nn.LayerNorm(hp.code_dim), nn.Linear(hp.code_dim, self.detail_shape[1])
        )
        self.head_semantic = nn.Sequential(nn.LayerNorm(hp.code_dim), nn.Linear(hp.code_dim, dim))
        self.decoder_detail, self.decoder_semantic = decoder(len(detail_idx)), decoder(len(semantic_idx))

    # -- forward -------------------------------------------------------------------------------------------
    def split(self, voxels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, V)`` -> fMRI-Detail ``(B, V_D)`` and fMRI-Semantic ``(B, V_S)``."""
        return voxels[:, self.detail_idx], voxels[:, self.semantic_idx]

    def codes(self, voxels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The codes ``b_D``, ``b_S`` ``(B, T, code_dim)`` of a batch."""
        f_detail, f_semantic = self.split(voxels)
        return self.encoder_detail(f_detail), self.encoder_semantic(f_semantic)

    def forward(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, V)`` -> ``clip_tokens`` (B, T, D), ``clip_image`` (B, D) and ``detail`` (B, T, W)."""
        b_detail, b_semantic = self.codes(voxels)
        tokens = self.head_semantic(b_semantic)
        return {
            "clip_tokens": tokens,
            "clip_image": pool_tokens(tokens, self.hparams.pool),
            "detail": self.head_detail(b_detail),
        }

    # -- loss ----------------------------------------------------------------------------------------------
    def detail_target(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """CLIP-Detail: the mean of the ``detail_layers`` token grids ``(B, T, W)``."""
        return torch.stack([batch[name] for name in self.detail_names()]).mean(dim=0)

    def loss_terms(
        self, batch: Mapping[str, torch.Tensor], stage: str = "train"
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Every term of the loss (unweighted), their weighted sum ``loss``, and the semantic tokens."""
        hp = self.hparams
        voxels = batch["voxels"]
        f_detail, f_semantic = self.split(voxels)
        b_detail, b_semantic = self.encoder_detail(f_detail), self.encoder_semantic(f_semantic)
        y_detail, y_semantic = self.head_detail(b_detail), self.head_semantic(b_semantic)
        c_detail, c_semantic = self.detail_target(batch), batch["clip_tokens"]
        cross_semantic = self.decoder_detail(b_semantic)[:, self.shared_in_detail]  # F_hat_{S,C} = D_D(b_S)
        cross_detail = self.decoder_semantic(b_detail)[:, self.shared_in_semantic]  # F_hat_{D,C} = D_S(b_D)
        terms = {
            "nce_detail": nce(y_detail, c_detail, hp.temp),
            "nce_semantic": nce(y_semantic, c_semantic, hp.temp),
            "mse_detail": F.mse_loss(y_detail, c_detail),
            "mse_semantic": F.mse_loss(y_semantic, c_semantic),
            "coarse_detail": nce(y_detail.mean(dim=1), c_detail.mean(dim=1), hp.temp),
            "coarse_semantic": nce(pool_tokens(y_semantic, hp.pool), batch["clip_image"], hp.temp),
            "recon_detail": F.mse_loss(self.decoder_detail(b_detail), f_detail),
            "recon_semantic": F.mse_loss(self.decoder_semantic(b_semantic), f_semantic),
            "cross_semantic": F.mse_loss(cross_semantic, f_semantic[:, self.shared_in_semantic]),
            "cross_detail": F.mse_loss(cross_detail, f_detail[:, self.shared_in_detail]),
        }
        weights = {
            "nce": hp.w_nce,
            "mse": hp.w_mse,
            "coarse": hp.w_coarse,
            "recon": hp.w_recon,
            "cross": hp.w_cross,
        }
        terms["loss"] = sum(weights[name.split("_")[0]] * value for name, value in terms.items())
        return terms, {"clip_tokens": y_semantic}

    def configure_optimizers(self) -> dict:
        """AdamW (no decay on biases and LayerNorms), OneCycle(pct_start = 2 / epochs) stepped per batch."""
        hp = self.hparams
        return adamw_one_cycle(
            self,
            self.parameters(),
            max_lr=hp.max_lr,
            weight_decay=hp.weight_decay,
            max_epochs=self.schedule_epochs(),
        )
