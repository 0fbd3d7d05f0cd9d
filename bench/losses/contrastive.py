"""Contrastive feature alignment: the InfoNCE of Lin et al., NeurIPS 2023, Eq. 2.

S001 aligns the features z_i of a source image with those z_i⁺ of the same image after
StyleNet has given it the target's style:

    L_align = − Σ_i log( e^{⟨z_i, z_i⁺⟩/τ} / Σ_{k≠i} (e^{⟨z_i, z_k⟩/τ} + e^{⟨z_i, z_k⁺⟩/τ}) )

with ⟨·,·⟩ the cosine similarity and τ = 0.5. Unlike SimCLR's NT-Xent the denominator holds
the 2(B − 1) negatives only, not the positive, so a term can be negative (the loss is not
bounded below by 0) and it is only defined for B ≥ 2. Only z_i is the anchor: the symmetric
term with z_i⁺ as the anchor, which NT-Xent adds, is not in Eq. 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.errors import DabenchError


def info_nce(z: Tensor, z_pos: Tensor, tau: float = 0.5) -> Tensor:
    """Eq. 2 of S001 for features z [B,D] and their positives z_pos [B,D] (0-dim tensor).

    Returns the **mean** over the anchors i of the printed per-anchor terms, not their sum:
    L_sup (Eq. 1) is a batch mean, so a sum here would scale the weight λ_a = 0.1 of
    L_align relative to L_sup with the batch size (S001 pretrains at B = 64; the harness
    runs other sizes). Computed with logsumexp, in at least float32, so large 1/τ or
    half-precision features cannot overflow the exponentials.
    """
    if z.ndim != 2 or z.shape != z_pos.shape:
        raise DabenchError(
            f"info_nce expects z and z_pos of one shape [B, D], got {tuple(z.shape)} "
            f"and {tuple(z_pos.shape)}"
        )
    if z.shape[0] < 2:
        raise DabenchError(
            f"info_nce needs a batch of at least 2 (its denominator is over the other "
            f"samples), got B = {z.shape[0]}"
        )
    if not tau > 0:
        raise DabenchError(f"info_nce temperature must be > 0, got {tau}")
    dtype = torch.promote_types(z.dtype, torch.float32)
    anchors = F.normalize(z.to(dtype), dim=1)
    positives = F.normalize(z_pos.to(dtype), dim=1)
    sim_z = anchors @ anchors.T / tau  # [B,B] ⟨z_i, z_k⟩/τ
    sim_pos = anchors @ positives.T / tau  # [B,B] ⟨z_i, z_k⁺⟩/τ; diagonal = the positives
    own = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    # −inf on the diagonal removes k = i from the denominator (the 1[k≠i] of Eq. 2)
    negatives = torch.cat(
        [sim_z.masked_fill(own, float("-inf")), sim_pos.masked_fill(own, float("-inf"))], dim=1
    )
    per_anchor = torch.logsumexp(negatives, dim=1) - sim_pos.diagonal()
    return per_anchor.mean()
