"""Losses of Mask as Supervision (MaS, ECCV 2024): the mask terms (skeleton, physique), the
pose priors of its supplement A.1 (constant bone length, left/right symmetry, the cascade's
left/right tie), 2D affine equivariance, and the stage-0 centroid pseudo targets.

Conventions:

* Masks are float tensors [B,1,H,W] or [B,H,W] with values in [0, 1] (soft masks allowed);
  only shapes are checked, not values.
* Keypoints are in normalised grid coordinates x, y ∈ [−1, 1], x first, pixel centres at
  (2i + 1)/w − 1 — the ``grid_sample(align_corners=False)`` convention of
  :mod:`bench.models.skeleton_maps`. Image y points *down*.
* Every loss is a mean over the batch of a per-sample sum over joints (or a mean over
  pixels for the mask terms), returned as a 0-dim tensor, differentiable w.r.t. every
  tensor argument; none detaches anything, so a caller who wants a stop-gradient (e.g. on
  one branch of the equivariance loss) applies it itself.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.errors import DabenchError
from bench.models.skeleton_maps import coordinate_grid

# h36m17 indices of the supplement's pose priors (pelvis 0, r_hip 1, l_hip 4, spine 7,
# thorax 8, neck 9, head 10, l/r shoulder 11/14, l/r elbow 12/15, l/r wrist 13/16).
# Constant bone length on the spine chain pelvis→spine→thorax→neck→head (the paper's
# torso-pelvis, thorax-torso, neck-thorax, nose-neck, head-nose on a joint set with a nose).
H36M17_SPINE_BONES: tuple[tuple[int, int], ...] = ((0, 7), (7, 8), (8, 9), (9, 10))
# Symmetry: the shoulders' midpoint at the thorax, the hips' midpoint at the pelvis.
H36M17_SYMMETRY_PAIRS: tuple[tuple[int, int], ...] = ((11, 14), (4, 1))
H36M17_SYMMETRY_CENTRES: tuple[int, ...] = (8, 0)
# The cascade's stage-2 tie: left and right wrists, left and right elbows coincide.
H36M17_TIE_PAIRS: tuple[tuple[int, int], ...] = ((13, 16), (12, 15))

WEIGHT_POWERS: tuple[int, ...] = (1, 2)


# --- mask losses (Eq. 5 and the physique term) ------------------------------------------------


def skeleton_loss(
    m_skel: Tensor,
    m_gt: Tensor,
    weights: Tensor | None = None,
    clip: float | None = None,
    weight_power: int = 1,
) -> Tensor:
    """Skeleton-mask loss: mean over B, H, W of G^p · (M_Skel − M_GT)² · [M_Skel > clip].

    * ``weights`` G [B,H,W] (or [B,1,H,W]) are per-pixel weights (MaS's geodesic weights),
      ``None`` = 1 everywhere.
    * ``weight_power`` p: the authors' code multiplies the squared error by G, so G enters
      *linearly* (p = 1, default); the paper's Eq. 5 writes ‖G ⊙ (M_Skel − M_GT)‖², i.e. G
      squared (p = 2).
    * ``clip`` t: only pixels where the skeleton mask exceeds t count (the code uses 0.1).
      The skeleton mask is thin while the silhouette is wide, so without the clip the term
      also pulls the skeleton towards filling the whole silhouette; with it, it only pushes
      bone pixels that lie outside the silhouette back inside. The excluded pixels still
      count in the denominator (the mean is over all B·H·W pixels, as in the code). Eq. 5
      has no clip, hence the default ``None``.
    """
    skel, gt = _mask_pair(m_skel, m_gt, "m_skel")
    if clip is not None and not math.isfinite(clip):
        raise DabenchError(f"clip must be a finite threshold or None, got {clip!r}")
    err = (skel - gt).square()
    if clip is not None:
        err = err * (skel > clip).to(err.dtype)
    return _weighted_mean(err, weights, weight_power)


def physique_loss(
    m_phys: Tensor, m_gt: Tensor, weights: Tensor | None = None, weight_power: int = 1
) -> Tensor:
    """Physique loss: mean over B, H, W of G^p · (M_Physo − M_GT)², M_Physo = ψ(M_Skel).

    ``weights`` and ``weight_power`` as in :func:`skeleton_loss` (no clip: ψ's silhouette is
    meant to cover the whole person)."""
    phys, gt = _mask_pair(m_phys, m_gt, "m_phys")
    return _weighted_mean((phys - gt).square(), weights, weight_power)


def _as_masks(x: Tensor, name: str) -> Tensor:
    """[B,1,H,W] or [B,H,W] float -> [B,H,W]."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise DabenchError(f"{name} must be a float tensor, got {getattr(x, 'dtype', type(x))}")
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise DabenchError(f"{name} must be [B,1,H,W] or [B,H,W], got {list(x.shape)}")
    return x


def _mask_pair(pred: Tensor, gt: Tensor, name: str) -> tuple[Tensor, Tensor]:
    p = _as_masks(pred, name)
    g = _as_masks(gt, "m_gt")
    if p.shape != g.shape:
        raise DabenchError(
            f"{name} {list(pred.shape)} and m_gt {list(gt.shape)} are not the same [B,H,W]"
        )
    return p, g.to(p.dtype)


def _weighted_mean(err: Tensor, weights: Tensor | None, power: int) -> Tensor:
    if power not in WEIGHT_POWERS:
        raise DabenchError(f"weight_power must be one of {WEIGHT_POWERS}, got {power!r}")
    if weights is not None:
        g = _as_masks(weights, "weights")
        if g.shape != err.shape:
            raise DabenchError(
                f"weights {list(weights.shape)} must match the masks' [B,H,W] {list(err.shape)}"
            )
        g = g.to(err.dtype)
        err = err * (g if power == 1 else g.square())
    return err.mean()


# --- pose priors (supp. A.1) ------------------------------------------------------------------


def bone_length_loss(
    points: Tensor, bones: Sequence[tuple[int, int]], lengths: Sequence[float] | Tensor
) -> Tensor:
    """Constant bone length: Σ_b (|x_i − x_j| − C_b)² over bones b = (i, j), batch mean.

    ``points`` [B,J,D] (D = 2 or 3, any units); ``lengths`` C_b in the same units, one per
    bone ([n_bones]) or per sample and bone ([B,n_bones], e.g. scaled by each person's
    size). MaS does not publish its constants, hence the argument; use
    :data:`H36M17_SPINE_BONES` for the supplement's spine chain. The gradient of |x_i − x_j|
    at a zero-length bone is taken as 0 (``torch.linalg.vector_norm``), never NaN.
    """
    _check_points(points)
    idx = _pairs(bones, points.shape[1], "bones")
    c = torch.as_tensor(lengths, dtype=points.dtype, device=points.device)
    if c.shape not in ((len(idx),), (points.shape[0], len(idx))):
        raise DabenchError(
            f"lengths must be [n_bones] = [{len(idx)}] or [B, n_bones] = "
            f"[{points.shape[0]}, {len(idx)}], got {list(c.shape)}"
        )
    i, j = (list(t) for t in zip(*idx, strict=True))
    length = torch.linalg.vector_norm(points[:, i] - points[:, j], dim=-1)  # [B,n_bones]
    return (length - c).square().sum(-1).mean()


def symmetry_loss(
    points: Tensor, pairs: Sequence[tuple[int, int]], centres: Sequence[int]
) -> Tensor:
    """Left/right symmetry: Σ_k ||(x_l + x_r)/2 − x_c||² for pairs[k] = (l, r) and
    centres[k] = c, batch mean; ``points`` [B,J,D], D = 2 or 3. In h36m17:
    :data:`H36M17_SYMMETRY_PAIRS` about :data:`H36M17_SYMMETRY_CENTRES` (shoulders about the
    thorax, hips about the pelvis)."""
    _check_points(points)
    idx = _pairs(pairs, points.shape[1], "pairs")
    ctr = _indices(centres, points.shape[1], "centres")
    if len(ctr) != len(idx):
        raise DabenchError(
            f"symmetry_loss needs one centre per pair, got {len(idx)} pairs and {len(ctr)} centres"
        )
    left, right = (list(t) for t in zip(*idx, strict=True))
    mid = 0.5 * (points[:, left] + points[:, right])
    return (mid - points[:, ctr]).square().sum(dim=(-2, -1)).mean()


def tie_loss(points: Tensor, pairs: Sequence[tuple[int, int]]) -> Tensor:
    """Tie: Σ ||x_l − x_r||² over pairs (l, r), batch mean. MaS's cascade forces the left
    and right hands and elbows together (:data:`H36M17_TIE_PAIRS`) for its first 600 stage-2
    steps, so that the arms first grow along the body's midline before splitting."""
    _check_points(points)
    idx = _pairs(pairs, points.shape[1], "pairs")
    left, right = (list(t) for t in zip(*idx, strict=True))
    return (points[:, left] - points[:, right]).square().sum(dim=(-2, -1)).mean()


def _check_points(points: Tensor, dims: tuple[int, ...] = (2, 3)) -> None:
    if not isinstance(points, Tensor) or not points.is_floating_point():
        raise DabenchError(
            f"points must be a float tensor, got {getattr(points, 'dtype', type(points))}"
        )
    if points.ndim != 3 or points.shape[-1] not in dims:
        shapes = " or ".join(f"[B,J,{d}]" for d in dims)
        raise DabenchError(f"points must be {shapes}, got {list(points.shape)}")


def _indices(values: Sequence[int], n: int, name: str) -> list[int]:
    try:
        out = [operator.index(v) for v in values]
    except TypeError:
        out = None
    if not out or any(not 0 <= v < n for v in out):
        raise DabenchError(
            f"{name} must be a non-empty sequence of joint indices in [0, {n}), got {values!r}"
        )
    return out


def _pairs(values: Sequence[tuple[int, int]], n: int, name: str) -> list[tuple[int, int]]:
    try:
        out = [(operator.index(a), operator.index(b)) for a, b in values]
    except (TypeError, ValueError):
        out = None
    if not out or any(not (0 <= a < n and 0 <= b < n) for a, b in out):
        raise DabenchError(
            f"{name} must be a non-empty sequence of (i, j) joint index pairs in [0, {n}), "
            f"got {values!r}"
        )
    return out


# --- equivariance (supp. A.1) -------------------------------------------------------------------


def random_affines(
    n: int,
    generator: torch.Generator | None = None,
    scale: float = 0.25,
    rotation_deg: float = 30.0,
    translate: float = 0.0,
    p_rotate: float = 0.6,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """n random similarity transforms [n,2,3] in grid coordinates, x' = A·x + b.

    The authors' augmentation (mmpose's top-down scale/rotation): scale factor
    s = 1 + ``scale``·clip(N(0,1), −1, 1); rotation θ = ``rotation_deg``·clip(N(0,1), −2, 2)
    degrees with probability ``p_rotate``, else 0; translation b = ``translate``·clip(N(0,1),
    −1, 1) per axis, in grid units (MaS's default: none). A = s·R(θ) with
    R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]] (clockwise on screen, since y points down; the
    distribution is symmetric, so the sense does not matter).

    All randomness comes from ``generator`` (the global RNG when ``None``), drawn on its
    device in a fixed order whatever the parameters, so one seeded generator gives the same
    transforms on every run. ``scale=0, rotation_deg=0, translate=0`` gives exact identities.
    """
    try:
        n = operator.index(n)
    except TypeError:
        n = -1
    if n < 0:
        raise DabenchError(f"n must be a non-negative integer, got {n!r}")
    if not 0 <= scale < 1:
        raise DabenchError(f"scale must be in [0, 1) (s = 1 ± scale stays > 0), got {scale}")
    if not (rotation_deg >= 0 and translate >= 0 and 0 <= p_rotate <= 1):
        raise DabenchError(
            "rotation_deg and translate must be >= 0 and p_rotate in [0, 1], got "
            f"{rotation_deg}, {translate}, {p_rotate}"
        )
    gen_device = generator.device if generator is not None else torch.device("cpu")
    kw = {"generator": generator, "device": gen_device, "dtype": torch.float64}
    s = 1 + scale * torch.randn(n, **kw).clamp(-1, 1)
    theta = math.radians(rotation_deg) * torch.randn(n, **kw).clamp(-2, 2)
    rotate = torch.rand(n, **kw) < p_rotate
    theta = torch.where(rotate, theta, torch.zeros_like(theta))
    shift = translate * torch.randn(n, 2, **kw).clamp(-1, 1)
    cos, sin = torch.cos(theta), torch.sin(theta)
    linear = s[:, None, None] * torch.stack(
        [torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], dim=-2
    )
    affines = torch.cat([linear, shift[..., None]], dim=-1)
    return affines.to(dtype=dtype or torch.get_default_dtype(), device=device or gen_device)


def _check_affines(affines: Tensor, batch: int) -> None:
    if not isinstance(affines, Tensor) or not affines.is_floating_point():
        raise DabenchError(
            f"affines must be a float tensor, got {getattr(affines, 'dtype', type(affines))}"
        )
    if affines.shape != (batch, 2, 3):
        raise DabenchError(f"affines must be [B,2,3] = [{batch}, 2, 3], got {list(affines.shape)}")


def invert_affines(affines: Tensor) -> Tensor:
    """The inverse transforms [B,2,3] of affines [B,2,3]: x = A⁻¹·x' − A⁻¹·b (closed-form
    2×2 inverse, so no LAPACK call per batch); a singular A is a :class:`DabenchError`."""
    _check_affines(affines, affines.shape[0] if isinstance(affines, Tensor) and affines.ndim else 0)
    a, b = affines[:, 0, 0], affines[:, 0, 1]
    c, d = affines[:, 1, 0], affines[:, 1, 1]
    det = a * d - b * c
    if bool((det.abs() <= torch.finfo(det.dtype).tiny).any()):
        raise DabenchError("affines must be invertible (det A != 0)")
    inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], dim=-2)
    inv = inv / det[:, None, None]
    shift = -(inv @ affines[:, :, 2:])
    return torch.cat([inv, shift], dim=-1)


def warp_images(images: Tensor, affines: Tensor) -> Tensor:
    """Apply T(x) = A·x + b to images [B,C,H,W]: the content at grid point x moves to T(x).

    ``grid_sample`` *pulls* — each output pixel y reads the input at a source location — so
    the sampling grid is T⁻¹(y) = A⁻¹·(y − b), built by ``F.affine_grid`` from the *inverse*
    transform. Both use ``align_corners=False``, whose normalised coordinates are the pixel-
    centre grid coordinates of :func:`bench.models.skeleton_maps.coordinate_grid`, so a
    keypoint mapped by :func:`transform_points` with the same affines lands where its image
    content went. Content moved in from outside the image is zero (``padding_mode="zeros"``).

    T acts on grid coordinates: on a non-square image a grid rotation is a rotation plus a
    shear in pixels (x and y are normalised by different sides). The loss stays consistent
    because points and images use the same T.
    """
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.ndim != 4:
        raise DabenchError(
            f"images must be float [B,C,H,W], got {getattr(images, 'dtype', type(images))} "
            f"{list(getattr(images, 'shape', []))}"
        )
    _check_affines(affines, images.shape[0])
    theta = invert_affines(affines.to(images.dtype))
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def transform_points(points: Tensor, affines: Tensor) -> Tensor:
    """T(x) = A·x + b for points [B,J,2] in grid coordinates with affines [B,2,3]."""
    _check_points(points, dims=(2,))
    _check_affines(affines, points.shape[0])
    affines = affines.to(points.dtype)
    return points @ affines[:, :, :2].transpose(-1, -2) + affines[:, None, :, 2]


def equivariance_loss(
    pred_on_warped: Tensor, pred: Tensor, affines: Tensor, weights: Tensor | None = None
) -> Tensor:
    """L_eq = Σ_j w_j ||T(φ(I))_j − φ(T(I))_j||², batch mean (supp. A.1).

    ``pred`` [B,J,2] = φ(I), ``pred_on_warped`` [B,J,2] = φ(warp_images(I, affines)), both in
    grid coordinates. Neither branch is detached (the paper's loss trains both).
    ``weights`` [B,J] (optional, default 1) lets a caller drop joints that T moves out of the
    image, where a detector cannot follow them.
    """
    _check_points(pred, dims=(2,))
    if not isinstance(pred_on_warped, Tensor) or pred_on_warped.shape != pred.shape:
        raise DabenchError(
            f"pred_on_warped {list(getattr(pred_on_warped, 'shape', []))} and pred "
            f"{list(pred.shape)} must be the same [B,J,2]"
        )
    err = (transform_points(pred, affines) - pred_on_warped).square().sum(-1)  # [B,J]
    if weights is not None:
        if weights.shape != err.shape:
            raise DabenchError(
                f"weights must be [B,J] = {list(err.shape)}, got {list(weights.shape)}"
            )
        err = err * weights.to(err.dtype)
    return err.sum(-1).mean()


# --- stage-0 centroid targets -------------------------------------------------------------------


def centroid_targets(masks: Tensor, thorax_offset: float) -> tuple[Tensor, Tensor, Tensor]:
    """Stage-0 pseudo targets from silhouettes [B,H,W] (or [B,1,H,W]): (pelvis [B,2],
    thorax [B,2], valid [B] bool), grid coordinates, detached (they are targets).

    * pelvis = the mask's centroid (mask values are the weights, so soft masks work);
    * thorax = the centroid moved *up* (−y) by ``thorax_offset`` grid units — MaS's "a point
      at a fixed distance from the centroid", whose distance the paper does not give. One
      grid unit in y is H/2 pixels.
    * An empty mask (total mass ≤ 0) has no centroid: its pelvis falls back to the image
      centre (0, 0), its thorax to (0, −offset), and ``valid`` is False, so the output is
      never NaN and :func:`init_loss` ignores the sample. A mask with any mass is valid.
    """
    m = _as_masks(masks, "masks").detach()
    if not math.isfinite(thorax_offset):
        raise DabenchError(f"thorax_offset must be a finite number, got {thorax_offset!r}")
    h, w = m.shape[-2:]
    grid = coordinate_grid(h, w, m.device, m.dtype)  # [H,W,2]
    mass = m.sum(dim=(-2, -1))  # [B]
    valid = mass > 0
    moment = torch.einsum("bhw,hwc->bc", m, grid)
    pelvis = torch.where(
        valid[:, None], moment / torch.where(valid, mass, torch.ones_like(mass))[:, None], 0.0
    )
    thorax = pelvis - pelvis.new_tensor([0.0, thorax_offset])
    return pelvis, thorax, valid


def init_loss(
    pred_pelvis: Tensor, pred_thorax: Tensor, pelvis: Tensor, thorax: Tensor, valid: Tensor
) -> Tensor:
    """Stage-0 loss: mean over the valid samples of ||p̂_pelvis − pelvis||² +
    ||p̂_thorax − thorax||² (all [B,2] or [B,D]; ``valid`` [B] bool from
    :func:`centroid_targets`). With no valid sample it is 0, still connected to the
    predictions' graph (zero gradient), rather than NaN."""
    tensors = (pred_pelvis, pred_thorax, pelvis, thorax)
    if (
        any(not isinstance(t, Tensor) or t.ndim != 2 for t in tensors)
        or len({tuple(t.shape) for t in tensors}) != 1
    ):
        raise DabenchError(
            "init_loss needs pred_pelvis, pred_thorax, pelvis, thorax of one shape [B,D], got "
            f"{[list(getattr(t, 'shape', [])) for t in tensors]}"
        )
    if not isinstance(valid, Tensor) or valid.shape != pred_pelvis.shape[:1]:
        raise DabenchError(
            f"valid must be [B] = [{pred_pelvis.shape[0]}], got {list(getattr(valid, 'shape', []))}"
        )
    per_sample = (pred_pelvis - pelvis.to(pred_pelvis.dtype)).square().sum(-1) + (
        pred_thorax - thorax.to(pred_thorax.dtype)
    ).square().sum(-1)
    keep = valid.to(torch.bool)
    # where, not a product: a NaN prediction on an invalid sample must not leak into the loss
    total = torch.where(keep, per_sample, torch.zeros_like(per_sample)).sum()
    return total / keep.sum().clamp_min(1).to(total.dtype)
