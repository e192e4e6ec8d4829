r"""MLIP's multi-domain, multi-level supervision: global CLIP losses plus token-level alignment.

Zhang et al. 2024, MLIP, ICML 2024, arXiv 2406.01460: CLIP's single image-text contrastive loss per pair
becomes supervision in two domains (spatial and frequency) at two levels (global and token). The paper's
equations were not reachable here; the token level follows FILIP's late interaction (Yao et al. 2021,
arXiv 2111.07783, Eq. 4-5), the standard token-wise contrastive form, and the total is

.. math::
    L = L_{clip}(v, t) + \lambda_f L_{clip}(f, t)
        + \lambda_t \left[L_{tok}(V, T) + L_{tok}(F, T)\right]

with ``v``/``f``/``t`` the spatial, frequency and text global embeddings, ``V``/``F``/``T`` their tokens, and
``lambda_f``, ``lambda_t`` options (:class:`brainbench.backbones.mlip.MLIPConfig`). A switched-off part drops
its terms.

Example:
    >>> import torch
    >>> image = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    >>> text = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]])
    >>> mask = torch.tensor([[True, False], [True, True]])
    >>> round(token_alignment_loss(image, text, mask, torch.tensor(1.0)).item(), 4)
    0.3133
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from brainbench.backbones.mlip import MLIPConfig


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of normalised ``(B, E)`` embeddings (Radford et al. 2021, Fig. 3)."""
    logits = logit_scale * image @ text.T
    labels = torch.arange(image.shape[0], device=image.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def token_similarities(
    image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""FILIP late-interaction similarities ``(B_img, B_txt)`` in both directions.

    .. math::
        s^{I}_{ab} = \frac{1}{n_a} \sum_i \max_{j \in b} \cos(V_{a,i}, T_{b,j}), \qquad
        s^{T}_{ab} = \frac{1}{m_b} \sum_{j \in b} \max_i \cos(V_{a,i}, T_{b,j})

    Args:
        image_tokens: ``(B, N, E)``.
        text_tokens: ``(B, L, E)``.
        text_mask: ``(B, L)``, True for the tokens that count.
    """
    image_n = F.normalize(image_tokens, dim=-1)
    text_n = F.normalize(text_tokens, dim=-1)
    sim = torch.einsum("aie,bje->abij", image_n, text_n)
    valid = text_mask[None, :, None, :]
    image_to_text = sim.masked_fill(~valid, float("-inf")).amax(dim=-1).mean(dim=-1)
    per_text_token = sim.amax(dim=2)  # (a, b, j)
    mask = text_mask[None].to(sim.dtype)
    text_to_image = (per_text_token * mask).sum(dim=-1) / mask.sum(dim=-1).clamp_min(1.0)
    return image_to_text, text_to_image


def token_alignment_loss(
    image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Token-level contrastive loss: InfoNCE over :func:`token_similarities` (image->text and text->image)."""
    image_to_text, text_to_image = token_similarities(image_tokens, text_tokens, text_mask)
    labels = torch.arange(image_tokens.shape[0], device=image_tokens.device)
    return 0.5 * (
        F.cross_entropy(logit_scale * image_to_text, labels)
        + F.cross_entropy(logit_scale * text_to_image.T, labels)
    )


def mlip_loss(out: dict[str, torch.Tensor], cfg: MLIPConfig) -> dict[str, torch.Tensor]:
    """Every term of the MLIP objective for one batch of :class:`brainbench.backbones.mlip.MLIPModel` outputs.

    Returns:
        ``{"loss": total, "clip": ..., "frequency": ..., "token_spatial": ..., "token_frequency": ...}`` (the
        terms of switched-off parts are absent).
    """
    scale = out["logit_scale"]
    terms = {"clip": clip_loss(out["image"], out["text"], scale)}
    total = terms["clip"]
    if "frequency" in out:
        terms["frequency"] = clip_loss(out["frequency"], out["text"], scale)
        total = total + cfg.lambda_frequency * terms["frequency"]
    if cfg.token_align:
        k = cfg.token_batch
        text_tokens, text_mask = out["text_tokens"][:k], out["text_mask"][:k]
        terms["token_spatial"] = token_alignment_loss(out["image_tokens"][:k], text_tokens, text_mask, scale)
        total = total + cfg.lambda_token * terms["token_spatial"]
        if "frequency_tokens" in out:
            terms["token_frequency"] = token_alignment_loss(
                out["frequency_tokens"][:k], text_tokens, text_mask, scale
            )
            total = total + cfg.lambda_token * terms["token_frequency"]
    terms["loss"] = total
    return terms
