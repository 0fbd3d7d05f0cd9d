"""From 2D keypoints and depths to camera-frame 3D (pinhole, x right, y down, z forward, mm).

Leading dimensions broadcast: shapes below are written for a batch [B] but any [...] works.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _normalised_rays(kp2d_px: Tensor, intrinsics: Tensor) -> Tensor:
    """K⁻¹ (u, v, 1): [B,K,2], [B,3,3] -> [B,K,3] with third component 1."""
    hom = torch.cat([kp2d_px, torch.ones_like(kp2d_px[..., :1])], dim=-1)
    # solve instead of inverting: handles any (skewed) K, batched
    rays = torch.linalg.solve(intrinsics, hom.transpose(-1, -2)).transpose(-1, -2)
    return rays / rays[..., 2:3]


def backproject(kp2d_px: Tensor, depth_mm: Tensor, intrinsics: Tensor) -> Tensor:
    """Pixels [B,K,2] at depths Z [B,K] with intrinsics [B,3,3] -> camera-frame [B,K,3]."""
    return _normalised_rays(kp2d_px, intrinsics) * depth_mm[..., None]


def lift_25d(
    kp2d_px: Tensor, rel_depth_mm: Tensor, root_depth_mm: Tensor, intrinsics: Tensor
) -> Tensor:
    """2.5D -> 3D: Z_k = Z_root + rel_k [B,K] (root_depth [B]), then backproject."""
    depth = rel_depth_mm + torch.as_tensor(root_depth_mm, dtype=rel_depth_mm.dtype)[..., None]
    return backproject(kp2d_px, depth, intrinsics)


def root_depth_from_bone(
    kp2d_px: Tensor,
    rel_depth: Tensor,
    intrinsics: Tensor,
    bone: tuple[int, int],
    bone_length: float | Tensor,
) -> Tensor:
    """Iqbal et al.'s closed-form root depth [B] (ECCV 2018; methods.md §1.4).

    The depth Z_root such that the 3D bone (n, m), with P_k = (Z_root + rel_k)·K⁻¹(u_k, v_k, 1),
    has length ``bone_length`` (same unit as ``rel_depth``; a scalar or [B]). Of the two
    roots of a·Z² + b·Z + c = 0 the larger is taken (the other puts the bone behind or across
    the camera); a negative discriminant (2D and depths inconsistent with the length) is
    clamped to 0, i.e. the depth that comes closest.
    """
    n, m = bone
    rays = _normalised_rays(kp2d_px, intrinsics)
    xn, yn = rays[..., n, 0], rays[..., n, 1]
    xm, ym = rays[..., m, 0], rays[..., m, 1]
    zn, zm = rel_depth[..., n], rel_depth[..., m]
    length = torch.as_tensor(bone_length, dtype=rays.dtype, device=rays.device)
    dx, dy = xn - xm, yn - ym
    ex, ey = zn * xn - zm * xm, zn * yn - zm * ym
    a = (dx**2 + dy**2).clamp_min(torch.finfo(rays.dtype).eps)
    b = 2 * (dx * ex + dy * ey)
    c = ex**2 + ey**2 + (zn - zm) ** 2 - length**2
    disc = (b**2 - 4 * a * c).clamp_min(0)
    return (-b + torch.sqrt(disc)) / (2 * a)
