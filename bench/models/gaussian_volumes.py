"""3-D Gaussian heatmap targets, their L2 loss (Park et al., Eq. 5) and decoding.

Coordinates are the normalised ones of ``PoseNet.targets``: x, y ∈ (0, 1) over the crop and
z = root-relative depth / depth_range_mm ∈ [−0.5, 0.5). Voxel centres sit at integer
coordinates (as heatmap pixels do in :mod:`bench.models.heatmaps`), so for a volume of
shape (D, h, w): x_vox = x·w − 0.5, y_vox = y·h − 0.5, z_vox = (z + 0.5)·D − 0.5, the inverse
of the soft-argmax conversion in ``PoseNet.head_outputs``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench.errors import DabenchError
from bench.models.heatmaps import gaussian_targets, soft_argmax_3d

DECODE_MODES = ("soft-argmax", "argmax")

# Softmax temperature of the soft-argmax decoder for the default sigma = 2 voxels. Near a
# peak of height 1, softmax(β·v) is a Gaussian of std σ/√β, and two errors pull against
# each other (measured on targets with random sub-voxel centres, σ = 2):
# * a large β narrows it below the voxel spacing, so the mean snaps towards the nearest
#   voxel centre: 0.33 voxel error at β = 100, 0.11 at β = 30, 0.075 at β = 25;
# * a small β lets the ~zero far field weigh in: every voxel there has weight e^0 against
#   e^β at the peak, and a 64³ volume has 2.6e5 ≈ e^12.5 of them, which drag the mean to the
#   volume's centre (19 voxels off at β = 10; 0.8 at β = 25 if the peak is only 0.6).
# β = 25 keeps both under 0.1 voxel for peaks of 0.8–1 in up to 64³ voxels. It scales with
# σ² (σ/√β ≈ 0.4 voxel, e.g. β ≈ 55 for σ = 3); for σ ≲ 1.5 no β is both sharp enough and
# unbiased, and "argmax" is the better decoder.
DEFAULT_BETA = 25.0


def _to_voxels(coords: Tensor, shape: tuple[int, int, int]) -> Tensor:
    d, h, w = shape
    x = coords[..., 0] * w - 0.5
    y = coords[..., 1] * h - 0.5
    z = (coords[..., 2] + 0.5) * d - 0.5
    return torch.stack([x, y, z], dim=-1)


def _from_voxels(xyz_vox: Tensor, shape: tuple[int, int, int]) -> Tensor:
    d, h, w = shape
    x = (xyz_vox[..., 0] + 0.5) / w
    y = (xyz_vox[..., 1] + 0.5) / h
    z = (xyz_vox[..., 2] + 0.5) / d - 0.5
    return torch.stack([x, y, z], dim=-1)


def gaussian_volume_targets(
    coords: Tensor, vis3d: Tensor, shape: tuple[int, int, int], sigma: float = 2.0
) -> tuple[Tensor, Tensor]:
    """Unnormalised 3-D Gaussians (peak 1 at the continuous centre) [B,K,D,h,w] and weights
    [B,K] for normalised coords [B,K,3] and ``vis3d`` [B,K] (bool or 0/1: joints with a 3D
    label). ``shape`` is (D, h, w); ``sigma`` is in voxels on every axis (the paper does not
    state it).

    As :func:`bench.models.heatmaps.gaussian_targets` in 2-D (of which this is the product
    with a 1-D depth Gaussian): a weight is 0, and its volume all zeros, for an unlabelled or
    non-finite joint or one whose 3σ window lies entirely outside the volume; the centre is
    not rounded, so the peak is exactly 1 only at integer voxel centres.
    """
    d, h, w = shape
    if coords.shape[-1] != 3 or coords.ndim != 3 or vis3d.shape != coords.shape[:2]:
        raise DabenchError(
            f"expected coords [B,K,3] and vis3d [B,K], got {list(coords.shape)} and "
            f"{list(vis3d.shape)}"
        )
    if min(d, h, w) < 1 or sigma <= 0:
        raise DabenchError(f"need a non-empty volume and sigma > 0, got {shape}, {sigma}")
    vox = _to_voxels(coords, shape)
    z = vox[..., 2]
    reach = 3.0 * sigma
    keep_z = torch.isfinite(z) & (z > -0.5 - reach) & (z < d - 0.5 + reach)
    # the 2-D maps handle visibility, non-finite x/y and the x/y window; folding the depth
    # test into their visibility zeroes those maps too
    planes, weights = gaussian_targets(vox[..., :2], (vis3d > 0) & keep_z, (h, w), sigma)
    z = torch.where(keep_z, z, torch.zeros_like(z))  # no NaN may reach the product
    zs = torch.arange(d, device=coords.device, dtype=vox.dtype)
    gz = torch.exp(-((zs - z[..., None]) ** 2) / (2 * sigma**2))  # [B,K,D]
    return gz[..., :, None, None] * planes[..., None, :, :], weights


def volume_l2_loss(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """Eq. 5's ||Ĥ − H||² for volumes [B,K,D,h,w]: the squared error is averaged over each
    joint's voxels, then over joints weighted by ``weights`` [B,K] (0 = ignored; 0 when
    every weight is 0).

    The paper does not say how the norm is normalised. A sum over the 64³ voxels would tie
    the loss's scale (and so the useful learning rate) to the volume size; the per-voxel mean
    keeps it comparable across sizes, at the price of small values (most voxels are ~0,
    §3.4's "large loss scale" pitfall) that the optimiser's learning rate or a loss weight
    must absorb.
    """
    if pred.shape != target.shape or pred.ndim != 5 or weights.shape != pred.shape[:2]:
        raise DabenchError(
            f"expected pred and target [B,K,D,h,w] and weights [B,K], got "
            f"{list(pred.shape)}, {list(target.shape)}, {list(weights.shape)}"
        )
    w = weights.to(torch.float32)
    keep = (w > 0)[..., None, None, None]
    # mask before squaring so that a non-finite prediction for an ignored joint stays out of
    # the loss and its gradient
    diff = torch.where(keep, pred - target.to(pred.dtype), torch.zeros_like(pred))
    per_joint = diff.square().mean(dim=(-3, -2, -1), dtype=torch.float32)
    return (per_joint * w).sum() / w.sum().clamp_min(1e-12)


def decode_volumes(
    volumes: Tensor, mode: str = "soft-argmax", beta: float = DEFAULT_BETA
) -> Tensor:
    """Volumes [B,K,D,h,w] -> coordinates [B,K,3] in the normalised space of
    ``PoseNet.targets``.

    * ``"soft-argmax"``: the expectation under softmax(β·volume) over all voxels,
      differentiable. An L2-regressed volume is not a logit map (values ~[0, 1]), so β
      sharpens the softmax around the peak; see ``DEFAULT_BETA`` for the choice of 25.
    * ``"argmax"``: the centre of the maximal voxel, without sub-voxel refinement (so it
      is exact to the voxel, robust to low peaks and far-field noise, not differentiable).

    The paper does not state its decoder.
    """
    if mode not in DECODE_MODES:
        raise DabenchError(f"unknown decode mode {mode!r}; valid: {', '.join(DECODE_MODES)}")
    if volumes.ndim != 5:
        raise DabenchError(f"expected volumes [B,K,D,h,w], got {list(volumes.shape)}")
    d, h, w = volumes.shape[-3:]
    if mode == "soft-argmax":
        xyz = soft_argmax_3d(beta * volumes)
    else:
        idx = volumes.flatten(-3).argmax(dim=-1)
        dtype = volumes.dtype if volumes.is_floating_point() else torch.float32
        xyz = torch.stack([idx % w, (idx // w) % h, idx // (h * w)], dim=-1).to(dtype)
    return _from_voxels(xyz, (d, h, w))
