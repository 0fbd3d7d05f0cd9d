"""Keypoints drawn as maps: pixel grids, coordinate conversions and per-bone Gaussian tubes.

Shared by Lin et al.'s bone maps (Eq. 6 of S001, which drive the reconstruction) and Mask as
Supervision's skeleton mask (Eqs. 4, 15–17 of S003, compared with a silhouette).

Coordinates: normalised grid coordinates x, y ∈ [−1, 1], x first, the convention of
``torch.nn.functional.grid_sample`` with ``align_corners=False``: the centre of pixel i of a
map of width w sits at (2i + 1)/w − 1, so the map's outer *edges* are at ±1.
:func:`heatmap_to_grid` converts from pixels (centres at integers, as in
:mod:`bench.models.heatmaps`; image pixels with the image size, heatmap pixels with the heatmap
size). Because the grid is resolution-free, a keypoint and a bone's σ mean the same thing at
every map size.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from torch import Tensor

from bench.errors import DabenchError

# below this squared length (grid units², far under float32 resolution of any real bone) a
# bone is treated as a point, so no division by zero is taken
_TINY = 1e-30


# --- coordinates ------------------------------------------------------------------------------


def heatmap_to_grid(xy_hm: Tensor, size: tuple[int, int]) -> Tensor:
    """Heatmap px [...,2] (pixel centres at integers, x first) -> normalised grid coordinates
    for a map of ``size`` = (h, w): ``(2·x + 1)/w − 1``, ``(2·y + 1)/h − 1``."""
    h, w = _check_size(size)
    x = (2 * xy_hm[..., 0] + 1) / w - 1
    y = (2 * xy_hm[..., 1] + 1) / h - 1
    return torch.stack([x, y], dim=-1)


def grid_to_heatmap(xy_grid: Tensor, size: tuple[int, int]) -> Tensor:
    """Normalised grid coordinates [...,2] -> heatmap px of a map of ``size`` = (h, w); the
    inverse of :func:`heatmap_to_grid`."""
    h, w = _check_size(size)
    x = ((xy_grid[..., 0] + 1) * w - 1) / 2
    y = ((xy_grid[..., 1] + 1) * h - 1) / 2
    return torch.stack([x, y], dim=-1)


def coordinate_grid(
    h: int,
    w: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Pixel centres of an h×w map in grid coordinates, [h,w,2] with [..., 0] = x. Passed to
    ``grid_sample`` (batched) it is the identity warp."""
    h, w = _check_size((h, w))
    dtype = dtype or torch.get_default_dtype()
    xs = (2 * torch.arange(w, device=device, dtype=dtype) + 1) / w - 1
    ys = (2 * torch.arange(h, device=device, dtype=dtype) + 1) / h - 1
    return torch.stack([xs.expand(h, w), ys[:, None].expand(h, w)], dim=-1)


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (operator.index(s) for s in size)
    except (TypeError, ValueError):
        h = w = 0
    if h < 1 or w < 1:
        raise DabenchError(f"size must be (h, w) with positive integers, got {size!r}")
    return h, w


# --- bone maps -------------------------------------------------------------------------------


def bone_maps(
    points: Tensor,
    bones: Sequence[tuple[int, int]],
    size: tuple[int, int],
    sigma: float | Sequence[float],
    squared: bool = True,
) -> Tensor:
    """Eq. 6: b_j(p) = exp(−d_j(p)/σ²) for every bone j = (parent, child), [B,J,h,w].

    ``points`` [B,K,2] are keypoints in grid coordinates; d_j(p) is the distance from the
    pixel centre p to the *segment* parent→child (projection clamped to the segment), so the
    map is exactly 1 on the segment. ``squared=True`` (default) uses the squared distance,
    the Gaussian-tube form of S003 (Mask as Supervision, Eq. 15) — S001 prints d without a
    square, which makes a cusp along the bone and a σ² with units of length; we read it as
    a typo but keep it selectable (``squared=False``). ``sigma`` is in grid units: one for
    every bone, or one per bone (Mask as Supervision draws arms thinner).

    A zero-length bone (parent == child) degenerates to the distance to that point; its
    value and gradient stay finite (the projection parameter is set to 0 through a double
    ``where``, and the unsquared distance has gradient 0 where d = 0). Differentiable w.r.t.
    ``points``.
    """
    if points.ndim != 3 or points.shape[-1] != 2:
        raise DabenchError(f"points must be [B,K,2], got {list(points.shape)}")
    sigmas = [float(sigma)] * len(bones) if isinstance(sigma, int | float) else list(sigma)
    if len(sigmas) != len(bones) or not all(s > 0 for s in sigmas):
        raise DabenchError(f"sigma must be > 0, one or one per bone, got {sigma}")
    k = points.shape[1]
    if len(bones) == 0 or any(
        len(bone) != 2 or not all(0 <= int(i) < k for i in bone) for bone in bones
    ):
        raise DabenchError(
            f"bones must be a non-empty sequence of (parent, child) indices into {k} keypoints, "
            f"got {list(bones)!r}"
        )
    h, w = _check_size(size)
    parents = points[:, [int(p) for p, _ in bones]]  # [B,J,2]
    children = points[:, [int(c) for _, c in bones]]
    grid = coordinate_grid(h, w, points.device, points.dtype)  # [h,w,2]
    seg = (children - parents)[:, :, None, None, :]  # [B,J,1,1,2]
    rel = grid - parents[:, :, None, None, :]  # [B,J,h,w,2]
    length2 = (seg * seg).sum(-1)
    proper = length2 > _TINY
    t = (rel * seg).sum(-1) / torch.where(proper, length2, torch.ones_like(length2))
    t = torch.where(proper, t.clamp(0.0, 1.0), torch.zeros_like(t))
    diff = rel - t[..., None] * seg
    d2 = (diff * diff).sum(-1)
    if squared:
        dist = d2
    else:
        on_segment = d2 <= 0
        dist = torch.where(
            on_segment,
            torch.zeros_like(d2),
            torch.sqrt(torch.where(on_segment, torch.ones_like(d2), d2)),
        )
    width2 = torch.tensor(sigmas, device=points.device, dtype=points.dtype) ** 2
    return torch.exp(-dist / width2[:, None, None])
