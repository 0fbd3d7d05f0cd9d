"""Heatmap coordinates, Gaussian targets and decoding (argmax and differentiable soft-argmax).

Heatmap pixel centres sit at integer coordinates, like image pixels, so a heatmap cell
covers exactly ``stride`` image pixels: heatmap cell i spans image x in
[i·stride − 0.5, (i+1)·stride − 0.5) and its centre is image px i·stride + (stride − 1)/2.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def image_to_heatmap(xy_px: Tensor, stride: float) -> Tensor:
    """Image px -> heatmap px: ``(px + 0.5) / stride - 0.5`` (pixel-centre consistent)."""
    return (xy_px + 0.5) / stride - 0.5


def heatmap_to_image(xy_hm: Tensor, stride: float) -> Tensor:
    """Heatmap px -> image px, the inverse of image_to_heatmap."""
    return (xy_hm + 0.5) * stride - 0.5


def gaussian_targets(
    xy_hm: Tensor, vis: Tensor, size: tuple[int, int], sigma: float = 2.0
) -> tuple[Tensor, Tensor]:
    """Unnormalised Gaussians (peak 1) at continuous centres.

    xy_hm [B,K,2] heatmap px, vis [B,K] (bool or 0/1), size (h, w). Returns targets
    [B,K,h,w] and weights [B,K]. A weight is 0 (and its map all zeros) for an invisible or
    non-finite joint, or one whose 3σ window lies entirely outside the map, as in the MSRA
    targets; the centre is not rounded (UDP-style), so the peak is exactly 1 only at integer
    centres.
    """
    h, w = size
    x, y = xy_hm[..., 0], xy_hm[..., 1]
    reach = 3.0 * sigma
    keep = (
        (vis > 0)
        & torch.isfinite(xy_hm).all(dim=-1)
        & (x > -0.5 - reach)
        & (x < w - 0.5 + reach)
        & (y > -0.5 - reach)
        & (y < h - 0.5 + reach)
    )
    weights = keep.to(xy_hm.dtype)
    # zero the centres we drop so NaN labels cannot leak into the maps
    x = torch.where(keep, x, torch.zeros_like(x))
    y = torch.where(keep, y, torch.zeros_like(y))
    xs = torch.arange(w, device=xy_hm.device, dtype=xy_hm.dtype)
    ys = torch.arange(h, device=xy_hm.device, dtype=xy_hm.dtype)
    gx = torch.exp(-((xs - x[..., None]) ** 2) / (2 * sigma**2))  # [B,K,w]
    gy = torch.exp(-((ys - y[..., None]) ** 2) / (2 * sigma**2))  # [B,K,h]
    targets = gy[..., :, None] * gx[..., None, :] * weights[..., None, None]
    return targets, weights


def soft_argmax_2d(logits: Tensor, beta: float = 1.0) -> tuple[Tensor, Tensor]:
    """Spatial softmax of ``beta·logits`` [B,K,h,w] -> expected (x, y) [B,K,2] in heatmap px
    and the probabilities [B,K,h,w]. Differentiable."""
    *lead, h, w = logits.shape
    probs = torch.softmax(beta * logits.reshape(*lead, h * w), dim=-1).reshape(*lead, h, w)
    xs = torch.arange(w, device=logits.device, dtype=probs.dtype)
    ys = torch.arange(h, device=logits.device, dtype=probs.dtype)
    x = (probs.sum(dim=-2) * xs).sum(dim=-1)
    y = (probs.sum(dim=-1) * ys).sum(dim=-1)
    return torch.stack([x, y], dim=-1), probs


def soft_argmax_3d(volumes: Tensor) -> Tensor:
    """Softmax over all voxels of [B,K,D,h,w] -> expected (x, y, z) [B,K,3] in voxel units
    (bin centres at 0..w−1, 0..h−1, 0..D−1). Differentiable."""
    return soft_argmax_3d_marginal(volumes)[0]


def soft_argmax_3d_marginal(volumes: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`soft_argmax_3d` and the (x, y) marginal of the voxel probabilities, summed
    over depth, [B,K,h,w]: (xyz, probs_xy). Both differentiable."""
    return _SoftArgmax3d.apply(volumes)


class _SoftArgmax3d(torch.autograd.Function):
    """Integral regression over a volume with a hand-written backward.

    The volume is large (K·D·h·w per sample) and the expectation is separable, so the
    gradient of every output is the probability volume times a sum of per-axis terms:
    ∂x̄/∂v = p·(x − x̄), and ∂p_xy(h,w)/∂v = p·(δ_hw − p_xy(h,w)). Autograd's generic
    softmax-and-sum graph makes about three times as many passes over the volume; on a
    CPU the volumetric head's step was 1.8× the 2.5D head's (docs/benchmarks.md).
    """

    @staticmethod
    def forward(ctx: Any, volumes: Tensor) -> tuple[Tensor, Tensor]:
        *_, d, h, w = volumes.shape
        peak = volumes.detach().flatten(-3).amax(-1)[..., None, None, None]
        probs = (volumes.detach() - peak).exp_()
        probs /= probs.sum(dim=(-3, -2, -1), keepdim=True)
        probs_xy = probs.sum(dim=-3)
        probs_z = probs.sum(dim=(-2, -1))
        xs, ys, zs = (torch.arange(n, device=volumes.device, dtype=probs.dtype) for n in (w, h, d))
        xyz = torch.stack([probs_xy.sum(-2) @ xs, probs_xy.sum(-1) @ ys, probs_z @ zs], dim=-1)
        ctx.save_for_backward(probs, probs_xy, xyz)
        return xyz, probs_xy

    @staticmethod
    def backward(ctx: Any, grad_xyz: Tensor, grad_xy: Tensor) -> Tensor:
        probs, probs_xy, xyz = ctx.saved_tensors
        *_, d, h, w = probs.shape
        xs, ys, zs = (torch.arange(n, device=probs.device, dtype=probs.dtype) for n in (w, h, d))
        gx, gy, gz = (grad_xyz[..., i, None] for i in range(3))
        # per-axis coefficients; the constant parts (−x̄·gx, …, −⟨G, p_xy⟩) fold into one
        plane = (gx * xs)[..., None, :] + (gy * ys)[..., :, None]  # [B,K,h,w]
        const = (grad_xyz * xyz).sum(-1)
        if grad_xy is not None:
            plane = plane + grad_xy
            const = const + (grad_xy * probs_xy).sum(dim=(-2, -1))
        plane = plane - const[..., None, None]
        depth = (gz * zs)[..., :, None, None]  # [B,K,D,1,1]
        return probs * (plane[..., None, :, :] + depth)


def argmax_2d(heatmaps: Tensor, refine: bool = True) -> Tensor:
    """Location of each map's maximum [B,K,h,w] -> [B,K,2] heatmap px (float).

    With ``refine``, the classic MSRA/Simple-Baseline shift: a quarter pixel towards the
    higher of the two neighbours along each axis (only where both neighbours exist).
    """
    *lead, h, w = heatmaps.shape
    flat = heatmaps.reshape(*lead, h * w)
    idx = flat.argmax(dim=-1)
    px = idx % w
    py = torch.div(idx, w, rounding_mode="floor")
    dtype = heatmaps.dtype if heatmaps.is_floating_point() else torch.float32
    xy = torch.stack([px, py], dim=-1).to(dtype)
    if not refine:
        return xy

    def value(dx: int, dy: int) -> Tensor:
        qx = (px + dx).clamp(0, w - 1)
        qy = (py + dy).clamp(0, h - 1)
        return flat.gather(-1, (qy * w + qx)[..., None])[..., 0]

    inner_x = (px > 0) & (px < w - 1)
    inner_y = (py > 0) & (py < h - 1)
    shift_x = torch.sign(value(1, 0) - value(-1, 0)) * inner_x
    shift_y = torch.sign(value(0, 1) - value(0, -1)) * inner_y
    return xy + 0.25 * torch.stack([shift_x, shift_y], dim=-1).to(xy.dtype)
