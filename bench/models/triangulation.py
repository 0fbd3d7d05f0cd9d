"""Differentiable multi-view geometry: projection, linear (DLT) triangulation, reprojection.

Mask as Supervision (ECCV 2024) turns per-view 2D predictions into one 3D pose and projects
it back, so that every view's 2D is made consistent with the others; both steps have to pass
gradients to the 2D predictions of every view. This module is the project's one DLT: the
numpy :func:`bench.data.geometry.triangulate` delegates here.

Conventions are those of :mod:`bench.data.geometry`: world→camera ``X_cam = R X + t``,
OpenCV camera axes, pixel = (K X_cam)[:2] / (K X_cam)[2], lengths in mm.

Numerics of :func:`triangulate`, in short (details at the helpers):

* float64 inside, whatever the input dtype: the systems are tiny (2V + 3 rows × 4), and a
  float32 SVD of even the conditioned system adds ~1e-3 mm at 4 m (measured) on top of the
  inputs' own rounding.
* Each DLT row is scaled to a unit plane normal, so that every residual is the distance
  (world units) from the point to the plane back-projected from one pixel coordinate — the
  same for a 64 px crop as for a 1000 px frame, and independent of the arbitrary scale of
  each P. (Hartley's translate-and-scale of pixel coordinates reduces, for these rows, to a
  per-view row scale, because the translation cancels algebraically; the plane-normal scale
  is that scale chosen per row so it has a geometric meaning.)
* The world frame is normalised (Hartley's 3D step) to the rig: centred on the point the
  cameras look at, scaled by their distance to it, so all four columns of the system are of
  order one.
* A weak prior (three rows of size ``_PRIOR``) pulls towards that centre. It moves a joint
  seen by two views by ~1e-7 mm when they are 90° apart, ~1e-4 mm for a 3° stereo pair at
  4 m, and gives every joint a unique, finite answer and gradient when fewer than two views
  see it (see :func:`triangulate`).
* The smallest right singular vector comes from ``torch.linalg.svd`` with a hand-written
  backward (:class:`_SmallestSingularVector`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from bench.errors import DabenchError

# Size of the prior rows that pull towards the rig centre, in the normalised frame where the
# data rows have unit normals and the cameras are at distance ~1. Its bias on a joint seen by
# two views grows as (_PRIOR / σ₃)², σ₃ the joint's third singular value (small for narrow
# baselines): measured 1e-7 mm for views 90° apart, 7e-5 mm for 3°, at 4 m. It must not be
# much smaller: for a joint seen by one view the backward divides by the squared gap of the
# two smallest singular values (~_PRIOR²), and at 1e-8 that joint's gradient no longer
# matches finite differences (tests/test_triangulation.py, the fallback test).
_PRIOR = 1e-5
# Weight of the camera centroid when locating the point the optical axes meet, relative to
# one view; only decides where that point lies for (nearly) parallel axes.
_AXES_PRIOR = 1e-3
# |w| floor when de-homogenising, in the normalised frame (a point 1e12 rig sizes away)
_MIN_W = 1e-12
_TINY = 1e-300


# --- projection ----------------------------------------------------------------------------


def projection_matrices(K: Tensor, R: Tensor, t: Tensor) -> Tensor:
    """P = K [R | t]: K [...,3,3], R [...,3,3], t [...,3] -> [...,3,4] (leading dims broadcast).

    With this P, ``P @ (X, 1)`` is ``K X_cam``, whose third entry is the camera depth z when
    K's last row is (0, 0, 1) — :func:`project_with_depth` relies on that to report depth.
    """
    if K.shape[-2:] != (3, 3) or R.shape[-2:] != (3, 3) or t.shape[-1:] != (3,):
        raise DabenchError(
            "projection_matrices needs K [...,3,3], R [...,3,3], t [...,3]; got "
            f"K {list(K.shape)}, R {list(R.shape)}, t {list(t.shape)}"
        )
    lead = torch.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    rt = torch.cat([R.expand(*lead, 3, 3), t[..., None].expand(*lead, 3, 1)], dim=-1)
    return K @ rt


def project_with_depth(
    world: Tensor, P: Tensor, *, min_depth: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """Pixels [..., J, 2] and depths [..., J] of world points [..., J, 3] through P [..., 3, 4].

    The depth is the third homogeneous coordinate of ``P (X, 1)``: camera z in world units
    for P = K [R | t]; negative for points behind the camera, which callers must mask — the
    pixels of such points are the mirrored projection, not a point in the image.

    Leading dims broadcast, so world [B, 1, J, 3] with P [B, V, 3, 4] gives [B, V, J, 2].
    The divisor is kept at least ``min_depth`` away from 0 (sign kept): a point on the camera
    plane then maps far away instead of to inf/NaN, and the gradient through the divisor is
    0 there rather than infinite, so one such point cannot poison a batch's gradient.
    """
    if world.shape[-1:] != (3,) or world.ndim < 2 or P.shape[-2:] != (3, 4):
        raise DabenchError(
            "project needs world points [..., J, 3] and P [..., 3, 4]; got "
            f"world {list(world.shape)}, P {list(P.shape)}"
        )
    dtype = torch.promote_types(world.dtype, P.dtype)
    world, P = world.to(dtype), P.to(dtype)
    hom = world @ P[..., :3].transpose(-1, -2) + P[..., None, :, 3]
    depth = hom[..., 2]
    away = depth.abs().clamp_min(min_depth)
    divisor = torch.where(depth < 0, -away, away)
    return hom[..., :2] / divisor[..., None], depth


def project(world: Tensor, P: Tensor, *, min_depth: float = 1e-6) -> Tensor:
    """Pixels [..., J, 2] of world points [..., J, 3] through P [..., 3, 4].

    See :func:`project_with_depth` (which also returns the depth, to find points behind the
    camera) for broadcasting and the clamp of the divisor.
    """
    return project_with_depth(world, P, min_depth=min_depth)[0]


# --- triangulation -------------------------------------------------------------------------


def triangulate(uv: Tensor, P: Tensor, weights: Tensor | None = None) -> Tensor:
    """Linear (DLT) triangulation: pixels uv [B,V,J,2] in V calibrated views with P [B,V,3,4]
    -> world points [B,J,3], differentiable w.r.t. uv, P and weights.

    Every joint is the smallest right singular vector of its stacked rows
    w·(u P₃ − P₁), w·(v P₃ − P₂), conditioned as the module docstring says; computed in
    float64 and returned in the promoted dtype of uv and P. Error on exact projections of
    points 4 m away: ~1e-7 mm with float64 inputs (views 90° apart; ~1e-4 mm for a 3°
    pair, the prior's bias), ~5e-4 mm with float32 inputs, whose rounding of P and uv
    (~1e-7 relative) no float64 arithmetic can undo; the same for 64 px crops and 1000 px
    frames.

    ``weights`` [B,V,J] (default 1) multiply the rows, so the least-squares weight of a
    view is w²; 0 drops the view for that joint exactly (its pixels then have no influence
    and receive zero gradient; its camera still shapes the normalising frame, so the answer
    differs from one without that camera by ~1e-5 mm). The authors' later code weights
    each view by its predicted absolute depth; we do not copy that quirk.

    Fewer than two effective views for a joint is not an error (a view can lose a joint to
    occlusion or a zero weight) and never gives NaN: the weak prior of the module picks the
    point of the single view's ray closest to the rig centre (so it reprojects exactly onto
    that view's pixel), or the rig centre itself when no view is left; its gradient stays
    finite. The rig centre is the least-squares meeting point of the optical axes. V < 2 or
    inconsistent shapes raise :class:`DabenchError`, and so does a P whose left 3×3 block is
    singular (not a finite camera).
    """
    dtype = _result_dtype(uv, P)
    world = _triangulate64(uv, P, weights)
    return world.to(dtype)


def reproject(uv: Tensor, P: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Triangulate pixels uv [B,V,J,2] (P [B,V,3,4], weights [B,V,J]) and project the result
    back into every view: (world [B,J,3], uv_reprojected [B,V,J,2]).

    This is Mask as Supervision's consistency step: per-view 2D predictions → one 3D pose →
    2D that agrees across views. Gradients of the reprojected pixels reach every view's uv.
    Projection is done in float64 before casting, so the round-trip error is that of the
    triangulation alone.
    """
    dtype = _result_dtype(uv, P)
    world = _triangulate64(uv, P, weights)
    uv_back = project(world[:, None], P.to(torch.float64))
    return world.to(dtype), uv_back.to(dtype)


def _result_dtype(uv: Tensor, P: Tensor) -> torch.dtype:
    dtype = torch.promote_types(uv.dtype, P.dtype)
    return dtype if dtype.is_floating_point else torch.get_default_dtype()


def _check_shapes(uv: Tensor, P: Tensor, weights: Tensor | None) -> None:
    shapes = f"uv {list(uv.shape)}, P {list(P.shape)}" + (
        "" if weights is None else f", weights {list(weights.shape)}"
    )
    ok = uv.ndim == 4 and uv.shape[-1] == 2 and P.ndim == 4 and P.shape[-2:] == (3, 4)
    ok = ok and uv.shape[:2] == P.shape[:2]
    if ok and weights is not None:
        ok = tuple(weights.shape) == tuple(uv.shape[:3])
    if not ok:
        raise DabenchError(
            f"triangulate needs uv [B,V,J,2], P [B,V,3,4] and weights [B,V,J] with the same "
            f"B, V, J; got {shapes}"
        )
    if uv.shape[1] < 2:
        raise DabenchError(
            f"triangulate needs at least 2 views (V ≥ 2) to locate a point in 3D; got {shapes}"
        )


def _triangulate64(uv: Tensor, P: Tensor, weights: Tensor | None) -> Tensor:
    """:func:`triangulate` in float64 (for :func:`reproject` to project before casting)."""
    _check_shapes(uv, P, weights)
    uv, P = uv.to(torch.float64), P.to(torch.float64)
    b, v, j, _ = uv.shape
    centre, scale = _rig_frame(P)

    # Rows u P₃ − P₁ and v P₃ − P₂ of every view and joint: [B,V,J,2,4]
    rows = uv[..., None] * P[:, :, None, None, 2, :] - P[:, :, None, :2, :]
    # Unit plane normals: the residual becomes the point-to-plane distance in world units
    # (never a zero normal for a finite camera: rows 1–3 of K R are independent).
    rows = rows / torch.linalg.vector_norm(rows[..., :3], dim=-1, keepdim=True).clamp_min(_TINY)
    # X = c + s·x' (Hartley's 3D normalisation): row·(X, 1) = s·(n·x' + (n·c + d)/s)
    offset = (rows[..., :3] * centre[:, None, None, None, :]).sum(-1) + rows[..., 3]
    rows = torch.cat([rows[..., :3], (offset / scale[:, None, None, None])[..., None]], dim=-1)
    if weights is not None:
        rows = rows * weights.to(torch.float64)[..., None, None]
    system = rows.permute(0, 2, 1, 3, 4).reshape(b, j, 2 * v, 4)
    prior = _PRIOR * torch.eye(3, 4, dtype=torch.float64, device=uv.device)
    system = torch.cat([system, prior.expand(b, j, 3, 4)], dim=2)

    hom = _SmallestSingularVector.apply(system)
    w, away = hom[..., 3:], hom[..., 3:].abs().clamp_min(_MIN_W)
    w = torch.where(w < 0, -away, away)
    return centre[:, None, :] + scale[:, None, None] * (hom[..., :3] / w)


def _rig_frame(P: Tensor) -> tuple[Tensor, Tensor]:
    """Centre [B,3] and scale [B] of the world frame the DLT is solved in, from P alone.

    The centre is where the optical axes meet (least squares): for any rig that looks at
    the subject it lies in the subject, so the normalised points are O(1) and the fallback
    of a joint seen by one view lands at the subject's depth. The scale is the RMS distance
    from the camera centres to it. Both depend on P only, not on the pixels, so they neither
    couple joints through the pixels nor make a dropped view's pixels matter.
    """
    m, p4 = P[..., :3], P[..., 3]
    centres, info = torch.linalg.solve_ex(m, -p4)
    if bool((info != 0).any()):
        raise DabenchError(
            f"triangulate: P[..., :3] is singular for some view (P {list(P.shape)}): not a "
            "finite projective camera K [R | t]"
        )
    axes = m[..., 2, :] / torch.linalg.vector_norm(m[..., 2, :], dim=-1, keepdim=True)
    eye = torch.eye(3, dtype=P.dtype, device=P.device)
    across = eye - axes[..., :, None] * axes[..., None, :]  # [B,V,3,3]: off-axis part
    # (Σ_v (I − a aᵀ) + μ V I) c = Σ_v (I − a aᵀ) C_v + μ V C̄: μ only settles parallel axes
    mu = _AXES_PRIOR * P.shape[1]
    lhs = across.sum(1) + mu * eye
    rhs = (across @ centres[..., None]).squeeze(-1).sum(1) + mu * centres.mean(1)
    centre = torch.linalg.solve(lhs, rhs)
    spread = (centres - centre[:, None]).square().sum(-1).mean(1)
    return centre, (spread + _TINY).sqrt()


class _SmallestSingularVector(torch.autograd.Function):
    """Unit right singular vector of the smallest singular value of A [..., m, 4] (m ≥ 4).

    Forward: ``torch.linalg.svd`` rather than ``eigh`` of AᵀA, because forming AᵀA squares
    the condition number; that matters for a joint seen by one view, whose two smallest
    singular values (~_PRIOR = 1e-5) would become eigenvalues (~1e-10) too close to the
    rounding of AᵀA's largest (~1e-16) for accurate vectors and gradients.

    Backward: first-order perturbation of the smallest eigenvector v₄ of M = AᵀA,
    dv₄ = Σ_{i<4} v_i (v_iᵀ dM v₄) / (λ₄ − λ_i), λ_i = σ_i². Written by hand because
    autograd's SVD backward divides by *every* pair's gap σ_i² − σ_j², so equal singular
    values among the three we do not use (a symmetric rig) give 0/0 = NaN although the
    gradient is defined; here only the gaps to σ₄ appear, floored so a tie gives a large but
    finite gradient. The sign of v is arbitrary, which is fine: callers de-homogenise.
    """

    @staticmethod
    def forward(ctx: Any, a: Tensor) -> Tensor:
        _, s, vh = torch.linalg.svd(a, full_matrices=False)
        ctx.save_for_backward(a, s, vh)
        return vh[..., 3, :]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        a, s, vh = ctx.saved_tensors
        lam = s.square()
        v, others = vh[..., 3, :], vh[..., :3, :]
        floor = (torch.finfo(lam.dtype).eps * lam[..., :1]).clamp_min(_TINY)
        gap = (lam[..., :3] - lam[..., 3:]).clamp_min(floor)  # λ_i − λ₄ ≥ 0
        coeff = (others @ grad[..., None]).squeeze(-1) / gap
        dv = -(coeff[..., None] * others).sum(-2)  # Σ_i v_i (v_iᵀ g) / (λ₄ − λ_i)
        # L depends on M = AᵀA through v: ∂L/∂M = sym(dv vᵀ), ∂L/∂A = 2 A ∂L/∂M
        outer = dv[..., :, None] * v[..., None, :]
        return a @ (outer + outer.transpose(-1, -2))
