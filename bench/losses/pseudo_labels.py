"""Integrated pseudo-labelling of Lin et al., NeurIPS 2023 (S001 Sec. 3.3.1, Eq. 3).

Pieces, each a pure tensor function (methods.md §4.2, §4.5, §4.6):

* M_2D — :func:`confidence_mask`: UniFrame's per-batch confidence rule (γ_2D is not given in
  S001; UniFrame keeps the keypoints above the batch's ``mask_ratio`` = 0.5 quantile).
* h̃ — :func:`pseudo_heatmaps`: Gaussians re-centred at the teacher's argmax (UniFrame
  ``rectify``).
* ỹ — :func:`kinematic_correction`: the greedy SemiHand-style bone-length correction of the
  lifted prediction, with :func:`mean_bone_lengths` for the source's reference lengths.
* M_3D — :func:`reprojection_mask`: the 2D shift the correction causes, below γ_3D.
* L_pseudo — :func:`pseudo_loss` over per-keypoint errors (:func:`heatmap_errors` for the
  heatmap term), with the mask schedules of S002 Table B(a); :func:`mask_overlap` is the
  curve of S002 Table B(b).

Masks are bool [B,K]; keypoint errors are [B,K]. Pseudo-labels are targets: callers detach
them (these functions stay differentiable so that they can also be used on live tensors).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from bench.errors import DabenchError

# The schedules of Eq. 3 and S002 Table B(a), declared once with the method's settings
from bench.methods.specs.geometric import MASK_SCHEDULES
from bench.models.heatmaps import argmax_2d, gaussian_targets

# Slack on ⌊q·N⌋ so that a decimal quantile hits its exact count despite binary rounding
# (0.29·100 is 28.999999999999996 in floating point); far above the rounding error of q·N
# for any batch, far below the gap to the next integer.
_COUNT_SLACK = 1e-9


def confidence_mask(confidence: Tensor, drop_quantile: float) -> Tensor:
    """M_2D: keep all but the ⌊drop_quantile·B·K⌋ least confident keypoints of the batch.

    ``confidence`` [B,K] is the teacher's maximum heatmap activation per keypoint. UniFrame
    (``--mask-ratio 0.5``) thresholds at the batch's k-th smallest value and drops every
    keypoint at or below it, which drops more than intended when values tie; here the
    entries are ranked instead and exactly B·K − ⌊drop_quantile·B·K⌋ are kept (the floor
    taken with a 1e-9 slack against binary rounding of the product), the same set when
    there are no ties. Ties are broken by the flat (row-major) index: of equal values the
    one with the lower index is kept. NaN ranks below every number (dropped first).
    Returns a bool [B,K] mask; nothing is differentiable here.
    """
    if confidence.ndim != 2:
        raise DabenchError(
            f"confidence_mask expects confidence [B, K], got shape {tuple(confidence.shape)}"
        )
    if not 0.0 <= drop_quantile < 1.0:
        raise DabenchError(f"drop_quantile must be in [0, 1), got {drop_quantile}")
    n = confidence.numel()
    n_keep = n - math.floor(drop_quantile * n + _COUNT_SLACK)
    flat = confidence.detach().reshape(-1)
    flat = torch.where(torch.isnan(flat), torch.full_like(flat, float("-inf")), flat)
    # a stable descending sort keeps equal values in index order: the tie rule above
    order = torch.sort(flat, descending=True, stable=True).indices
    keep = torch.zeros(n, dtype=torch.bool, device=confidence.device)
    keep[order[:n_keep]] = True
    return keep.reshape(confidence.shape)


def pseudo_heatmaps(teacher_heatmaps: Tensor, sigma: float = 2.0) -> Tensor:
    """h̃: Gaussians (peak 1, ``sigma`` in heatmap px) at each teacher map's integer argmax.

    UniFrame's ``rectify``: [B,K,h,w] -> [B,K,h,w], detached. The argmax is not refined
    (no quarter-pixel shift), so each label's peak is exactly 1 at the teacher's maximum;
    of several equal maxima the first in row-major order wins (torch.argmax).
    """
    if teacher_heatmaps.ndim != 4:
        raise DabenchError(
            "pseudo_heatmaps expects teacher heatmaps [B, K, h, w], "
            f"got shape {tuple(teacher_heatmaps.shape)}"
        )
    heatmaps = teacher_heatmaps.detach()
    h, w = heatmaps.shape[-2:]
    xy = argmax_2d(heatmaps, refine=False)
    visible = torch.ones(xy.shape[:-1], dtype=torch.bool, device=xy.device)
    targets, _ = gaussian_targets(xy, visible, (h, w), sigma)
    return targets


def _topological_order(parents: Sequence[int], root: int) -> list[int]:
    """Joints with every parent before its children, starting at ``root``."""
    k = len(parents)
    if not 0 <= root < k:
        raise DabenchError(f"root {root} is not a joint of a {k}-joint tree")
    children: list[list[int]] = [[] for _ in range(k)]
    for j, p in enumerate(parents):
        if j == root:
            continue
        if not 0 <= p < k:
            raise DabenchError(f"joint {j} has invalid parent {p} in a {k}-joint tree")
        children[p].append(j)
    order, frontier = [], [root]
    while frontier:
        j = frontier.pop()
        order.append(j)
        frontier.extend(children[j])
    if len(order) != k:
        missing = sorted(set(range(k)) - set(order))
        raise DabenchError(f"joints {missing} do not reach root {root} (cycle in parents)")
    return order


def _per_joint_lengths(reference_lengths: Tensor, k: int, root: int) -> Tensor:
    """[K] (by child joint) or [K−1] (non-root joints in index order) -> [K], root entry 0."""
    ref = torch.as_tensor(reference_lengths)
    if ref.shape == (k,):
        ref = ref.clone()
    elif ref.shape == (k - 1,):
        ref = torch.cat([ref[:root], ref.new_zeros(1), ref[root:]])
    else:
        raise DabenchError(
            f"reference_lengths must have shape [{k}] (indexed by child joint) or "
            f"[{k - 1}] (non-root joints in order), got {tuple(ref.shape)}"
        )
    ref[root] = 0.0
    bones = torch.cat([ref[:root], ref[root + 1 :]])
    if not bool((torch.isfinite(bones) & (bones > 0)).all()):
        raise DabenchError(
            f"reference bone lengths must be finite and > 0, got {ref.tolist()} "
            "(a NaN usually means no finite sample for that bone in mean_bone_lengths)"
        )
    return ref


def kinematic_correction(
    pose: Tensor,
    parents: Sequence[int],
    root: int,
    reference_lengths: Tensor,
    scale_bone: tuple[int, int],
) -> Tensor:
    """ỹ: the lifted pose [B,K,3] with its bone lengths set to the reference (methods.md §4.6).

    The reading of SemiHand's label correction that S001 calls greedy: going down the tree
    from ``root`` (which stays where it is), each joint k is placed at its already corrected
    parent plus the *predicted* direction of bone (parent(k), k) times
    ``reference_lengths[k]·s``, so errors in a bone's direction carry down the chain. The
    sample's scale s [B] = ||pose[c] − pose[p]|| / reference length of ``scale_bone`` =
    (p, c) (either order; it must be a bone of the tree), e.g. wrist -> index MCP for
    hands, so the correction fixes proportions, not the absolute size, and a pose whose
    bones are already proportional to the reference comes back unchanged.

    ``reference_lengths``: [K], entry k the length of the bone *ending* in joint k (the
    root's entry is ignored), as :func:`mean_bone_lengths` returns; or [K−1], the same
    without the root's entry. All bone entries must be finite and > 0 (DabenchError).

    A predicted bone of length zero has no direction: its child is put on its corrected
    parent (offset 0) rather than inventing a direction, and its descendants follow from
    there; the output stays finite (a zero-length scale bone gives s = 0 and puts every
    joint on the root). A non-finite input joint makes its own subtree non-finite and
    nothing else (all of the sample when it is an end of the scale bone). Leading
    dimensions other than B broadcast: [..., K, 3].
    """
    k = len(parents)
    if pose.ndim < 2 or pose.shape[-2:] != (k, 3):
        raise DabenchError(
            f"kinematic_correction expects pose [B, {k}, 3] for a {k}-joint tree, "
            f"got shape {tuple(pose.shape)}"
        )
    a, b = scale_bone
    if 0 <= b < k and b != root and parents[b] == a:
        child = b
    elif 0 <= a < k and a != root and parents[a] == b:
        child = a
    else:
        raise DabenchError(f"scale_bone {scale_bone} is not a bone (parent, child) of the tree")
    order = _topological_order(parents, root)
    ref = _per_joint_lengths(reference_lengths, k, root).to(pose.dtype).to(pose.device)

    parent_index = torch.tensor(
        [root if j == root else parents[j] for j in range(k)], device=pose.device
    )
    bones = pose - pose[..., parent_index, :]  # [..., K, 3]; the root's "bone" is 0
    lengths = torch.linalg.vector_norm(bones, dim=-1, keepdim=True)
    tiny = torch.finfo(pose.dtype).tiny
    # bones * 0 rather than a literal 0 keeps NaN inputs NaN; the clamp keeps the unused
    # branch (and its gradient) finite for zero-length bones
    directions = torch.where(lengths > 0, bones / lengths.clamp_min(tiny), bones * 0)
    scale = lengths[..., child, :] / ref[child]  # [..., 1]
    offsets = directions * (ref[:, None] * scale[..., None, :])
    # joint by joint rather than as one matrix product over the paths: 0·NaN is NaN, so a
    # matrix product would spread one non-finite joint to the whole pose, not its subtree
    corrected: list[Tensor] = [pose[..., root, :]] * k
    for j in order[1:]:
        corrected[j] = corrected[parents[j]] + offsets[..., j, :]
    return torch.stack(corrected, dim=-2)


def mean_bone_lengths(poses: Tensor, parents: Sequence[int]) -> Tensor:
    """Mean length of every bone over samples: poses [N,K,3] -> [K] by child joint.

    Entry k is the mean of ||poses[:, k] − poses[:, parents[k]]|| over the samples where
    that length is finite (a missing joint spoils only its own bones); NaN when no sample
    has it. The root (parent < 0) has no bone: its entry is 0. This is the layout
    :func:`kinematic_correction` takes; on the synthetic source it gives the references.
    """
    k = len(parents)
    if poses.ndim != 3 or poses.shape[1:] != (k, 3):
        raise DabenchError(
            f"mean_bone_lengths expects poses [N, {k}, 3], got shape {tuple(poses.shape)}"
        )
    is_root = torch.tensor([p < 0 for p in parents], device=poses.device)
    parent_index = torch.tensor(
        [j if p < 0 else p for j, p in enumerate(parents)], device=poses.device
    )
    lengths = torch.linalg.vector_norm(poses - poses[:, parent_index, :], dim=-1)  # [N,K]
    finite = torch.isfinite(lengths)
    total = torch.where(finite, lengths, torch.zeros_like(lengths)).sum(0)
    mean = total / finite.sum(0)  # 0/0 -> NaN where no sample is finite
    return torch.where(is_root, torch.zeros_like(mean), mean)


def reprojection_mask(kp2d_before: Tensor, kp2d_after: Tensor, threshold_px: float) -> Tensor:
    """M_3D: ||before − after||₂ < γ_3D (strict), [B,K,2] pairs -> bool [B,K].

    ``before`` is the predicted (û, v̂), ``after`` the projection of the corrected pose ỹ;
    both in the same pixel frame as ``threshold_px``. A non-finite distance is never kept.
    """
    if kp2d_before.shape != kp2d_after.shape or kp2d_before.shape[-1:] != (2,):
        raise DabenchError(
            f"reprojection_mask expects two [B, K, 2] tensors, got {tuple(kp2d_before.shape)} "
            f"and {tuple(kp2d_after.shape)}"
        )
    if not threshold_px >= 0:
        raise DabenchError(f"threshold_px must be >= 0, got {threshold_px}")
    return torch.linalg.vector_norm(kp2d_before - kp2d_after, dim=-1) < threshold_px


def heatmap_errors(pred: Tensor, target: Tensor) -> Tensor:
    """Per-keypoint ||ĥ_k − h̃_k||₂ over the pixels: [B,K,h,w] pairs -> [B,K].

    Eq. 3 prints the norm itself, not its square (and not UniFrame's per-pixel MSE), so
    this is the square root of the summed squared differences; its gradient is taken as
    0 where the two maps are equal.
    """
    if pred.shape != target.shape or pred.ndim != 4:
        raise DabenchError(
            f"heatmap_errors expects two [B, K, h, w] tensors, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    return torch.linalg.vector_norm((pred - target).flatten(-2), dim=-1)


def _masked_mean(err: Tensor, mask: Tensor) -> Tensor:
    """Mean of err over mask; 0 (still attached to err's graph) for an empty mask."""
    # where, not err·mask: an unselected NaN error (e.g. a failed lift) must not leak in
    selected = torch.where(mask, err, torch.zeros_like(err))
    return selected.sum() / mask.sum().clamp_min(1)


def pseudo_loss(
    heat_err: Tensor,
    pose_err: Tensor,
    m2d: Tensor,
    m3d: Tensor,
    schedule: str,
    union_now: bool,
    lambda_y: float = 0.1,
) -> Tensor:
    """L_pseudo, Eq. 3 of S001, from per-keypoint errors [B,K] and bool masks [B,K].

    ``heat_err`` = ||ĥ_k − h̃_k||₂ (:func:`heatmap_errors`), ``pose_err`` = ||ŷ_k − ỹ_k||₂;
    both computed by the caller against detached pseudo-labels. Schedules
    (:data:`MASK_SCHEDULES`, S002 Table B(a)):

    * independent phase: mean(heat_err over M_2D) + λ_y·mean(pose_err over M_3D);
    * union phase: mean over M = M_2D ∪ M_3D of (heat_err + λ_y·pose_err);
    * ``"independent-then-union"`` (the paper's): union phase when ``union_now`` (the
      caller's epoch ≥ T), independent phase before; ``"independent"`` and ``"union"``
      use one phase throughout; ``"m2d-only"`` keeps only the heatmap term over M_2D,
      ``"m3d-only"`` only λ_y·(pose term) over M_3D. ``union_now`` is read only by the
      first schedule.

    An empty mask contributes 0 and keeps the graph (zero gradient, not None or NaN).
    """
    if schedule not in MASK_SCHEDULES:
        raise DabenchError(
            f"unknown mask schedule {schedule!r}; valid schedules: {', '.join(MASK_SCHEDULES)}"
        )
    shape = heat_err.shape
    if heat_err.ndim != 2 or any(t.shape != shape for t in (pose_err, m2d, m3d)):
        raise DabenchError(
            "pseudo_loss expects heat_err, pose_err, m2d and m3d of one shape [B, K], got "
            f"{[tuple(t.shape) for t in (heat_err, pose_err, m2d, m3d)]}"
        )
    if m2d.dtype != torch.bool or m3d.dtype != torch.bool:
        raise DabenchError(f"pseudo_loss masks must be bool, got {m2d.dtype} and {m3d.dtype}")
    if schedule == "m2d-only":
        return _masked_mean(heat_err, m2d)
    if schedule == "m3d-only":
        return lambda_y * _masked_mean(pose_err, m3d)
    union = schedule == "union" or (schedule == "independent-then-union" and union_now)
    if union:
        return _masked_mean(heat_err + lambda_y * pose_err, m2d | m3d)
    return _masked_mean(heat_err, m2d) + lambda_y * _masked_mean(pose_err, m3d)


def mask_overlap(m2d: Tensor, m3d: Tensor) -> Tensor:
    """|M_2D ∩ M_3D| / |M_2D ∪ M_3D| (IoU) as a 0-dim float tensor, over the whole batch.

    The overlap curve of S002 Table B(b), the signal for switching to the union. Two empty
    masks count as identical: 1.
    """
    if m2d.shape != m3d.shape:
        raise DabenchError(
            f"mask_overlap expects masks of one shape, got {tuple(m2d.shape)} "
            f"and {tuple(m3d.shape)}"
        )
    a, b = m2d.bool(), m3d.bool()
    inter = (a & b).sum().float()
    union = (a | b).sum().float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
