"""The versioned metric suite: 3D (MPJPE family, 3DHP PCK/AUC, hand AUC) and 2D (PCK, TLL PCK).

Every number the harness reports comes from :func:`evaluate`; the building blocks are public
so analyses can recompute one piece.  Definitions follow
``shared/reference/metrics-reporting.md`` Part 1; where published code disagrees, the choice
is pinned here and in :data:`METRICS_VERSION` (bump it whenever a definition changes, because
every stored record carries it).

Conventions
-----------
* 3D coordinates in **mm** (camera frame; any common frame works because roots are
  subtracted); 2D coordinates in **pixels of the stored crop**, pixel centres at integer
  coordinates, so a crop of side S spans ``[-0.5, S - 0.5)``.
* ``image_size`` / ``heatmap_size`` are ``(H, W)`` (an int means square).
* Root-relative 3D: the evaluation root of the joint set (``JointSet.root_position``: the tree
  root, or the hip midpoint for ``common14``) is subtracted from prediction *and* GT, so a
  model is never penalised for its absolute position.
* Visibility: 3D labels exist for occluded joints, so **every 3D metric uses all joints**;
  2D metrics use only visible joints (``vis``).
* Averaging: overall and per-group values are **pooled (micro)** over the (sample, joint)
  pairs they cover, as the 3DHP MATLAB scripts do; the only exception is ``pck2d_tll``, which
  is TLL's macro mean over joints everywhere (groups included).  ``overall`` always covers
  all K joints; ``per_group["all"]`` follows the joint set's own "all" group (for ``mpii16``
  that is TLL's 12 limb joints, so it differs from ``overall`` there on purpose).
* Non-finite predictions are allowed (a diverged model must still be evaluable): a joint
  whose prediction is NaN/inf has an **infinite** error, so mean errors become ``inf`` and
  PCK/AUC count it as wrong.  A non-finite predicted root makes the whole sample infinite in
  root-relative metrics; any non-finite joint makes the whole sample infinite in PA-/N-MPJPE
  (the per-sample alignment uses all joints).  Non-finite GT is an input error
  (:class:`DabenchError`); 2D GT is only checked where ``vis`` is true, because invisible
  joints' 2D labels are never read.
* 2D-only samples (MPII, LSP: every 3D coordinate NaN) are left out of the 3D metrics, which
  are NaN ("undefined") on a set without any 3D label; a sample with *some* non-finite 3D
  joints is still an input error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.integrate import trapezoid

from bench.data.joints import JointSet, get_joint_set
from bench.errors import DabenchError

__all__ = [
    "AUC3D_THRESHOLDS_MM",
    "AUC_HAND_THRESHOLDS_MM",
    "METRICS_VERSION",
    "PCK2D_FRACTION",
    "PCK3D_THRESHOLD_MM",
    "TLL_SIGMA",
    "TLL_THRESHOLD",
    "MetricReport",
    "ambiguity_ratio",
    "auc_3dhp",
    "auc_hand",
    "evaluate",
    "joint_errors",
    "metric_names",
    "mpjpe",
    "n_mpjpe",
    "n_mpjpe_errors",
    "pa_mpjpe",
    "pa_mpjpe_errors",
    "pck",
    "pck2d",
    "pck_tll",
    "procrustes_align",
    "root_relative",
    "tll_quantize",
]

# v2: TLL PCK with TLL's own cell rule. Adding a metric (ambiguity_pct, pckh_50) or
# leaving 2D-only samples out of the 3D metrics (an error before) changes no definition,
# so records with and without them stay comparable.
METRICS_VERSION: str = "2"

# PCKh@0.5 (MPII): 2D error <= 0.5 x the sample's head size (0.6 x the head-box diagonal).
PCKH_THRESHOLD: float = 0.5
# MPII's total leaves pelvis and thorax out (metrics-reporting.md §1.6).
PCKH_EXCLUDED: tuple[str, ...] = ("pelvis", "thorax")

PCK3D_THRESHOLD_MM: float = 150.0


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# 3DHP official grid 0:5:150 mm, 31 values *including 0* (mpii_compute_3d_pck.m); the AUC is
# the plain mean over them, so a perfect prediction scores 30/31 * 100.
AUC3D_THRESHOLDS_MM: np.ndarray = _frozen(np.arange(0.0, 151.0, 5.0))

# Hand AUC 20-50 mm.  hand3d uses linspace(0, 50, 20)[8:] (12 points from 21.05 mm) and STB's
# reference curves 20:5:50 (7 points); published values differ at ~1e-3 between grids, so the
# grid is pinned here: 31 points, 1 mm apart, PCK with `<=` (hand3d/FreiHAND EvalUtil), trapezoid
# integral divided by the 30 mm range.
AUC_HAND_THRESHOLDS_MM: np.ndarray = _frozen(np.linspace(20.0, 50.0, 31))

# pck2d_005: fraction of the crop side max(H, W).
PCK2D_FRACTION: float = 0.05

# TLL `accuracy(..., thr=0.5)` with per-axis normalisers heatmap_size / 10.
TLL_THRESHOLD: float = 0.5
# σ (heatmap cells) of TLL's keypoint targets (its datasets' default, RegDA's setting): only
# which GT joints its encoder leaves undrawn depends on it.
TLL_SIGMA: int = 2


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _json_value(v: Any) -> Any:
    # NaN means "undefined" (no valid sample) and has no JSON spelling; inf stays a float
    # because it carries meaning (a diverged prediction), json writes it as Infinity.
    if isinstance(v, float | np.floating):
        f = float(v)
        return None if math.isnan(f) else f
    return v


@dataclass(frozen=True, eq=False)
class MetricReport:
    """Result of :func:`evaluate`.  Units: errors in mm (3D) or px / % of crop side (2D),
    PCK and AUC in % (0-100).

    ``per_sample`` holds the raw material for later statistics (bootstrap, paired tests):
    ``err3d`` / ``err3d_pa`` / ``err3d_pa_refl`` / ``err3d_n`` ``[N, K]`` mm (inf where the
    prediction is non-finite), ``err2d`` ``[N, K]`` px (NaN where invisible), ``vis``
    ``[N, K]``, and ``tll_valid`` / ``tll_correct`` ``[N, K]`` bool.
    """

    overall: dict[str, float]
    per_joint: dict[str, np.ndarray]
    per_group: dict[str, dict[str, float]]
    per_sample: dict[str, np.ndarray]
    version: str
    joint_set: str = ""
    joints: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (no ``per_sample``); NaN becomes ``None``."""
        return {
            "version": self.version,
            "joint_set": self.joint_set,
            "joints": list(self.joints),
            "overall": {k: _json_value(v) for k, v in self.overall.items()},
            "per_joint": {
                k: [_json_value(x) for x in np.asarray(v, dtype=np.float64).tolist()]
                for k, v in self.per_joint.items()
            },
            "per_group": {
                g: {k: _json_value(v) for k, v in m.items()} for g, m in self.per_group.items()
            },
        }


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _resolve(joint_set: str | JointSet) -> JointSet:
    return joint_set if isinstance(joint_set, JointSet) else get_joint_set(joint_set)


def _size_pair(size: int | tuple[int, int], what: str) -> tuple[int, int]:
    pair = (size, size) if np.isscalar(size) else tuple(size)  # type: ignore[arg-type]
    if len(pair) != 2 or any(
        isinstance(s, bool) or not float(s).is_integer() or s <= 0 for s in pair
    ):
        raise DabenchError(f"{what} must be a positive int or (H, W) pair, got {size!r}")
    return int(pair[0]), int(pair[1])


def _heatmap_pair(
    image: tuple[int, int], heatmap_size: int | tuple[int, int] | None
) -> tuple[int, int]:
    # Default stride 4: the 256 -> 64 Simple-Baseline/TLL geometry (methods.md §1.1).
    if heatmap_size is None:
        return max(image[0] // 4, 1), max(image[1] // 4, 1)
    return _size_pair(heatmap_size, "heatmap_size")


def _as_points(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 3 or (dim is not None and a.shape[-1] != dim):
        want = f"[N, K, {dim}]" if dim is not None else "[N, K, D]"
        raise DabenchError(f"{name} must have shape {want}, got {a.shape}")
    return a


def _as_vis(vis: Any, shape: tuple[int, int]) -> np.ndarray:
    v = np.asarray(vis)
    if v.shape != shape:
        raise DabenchError(f"vis must have shape [N, K] = {list(shape)}, got {v.shape}")
    if v.dtype != bool:
        # A float "visibility score" silently thresholded would change what is evaluated.
        if not np.isin(v, (0, 1)).all():
            raise DabenchError("vis must be boolean (or 0/1)")
        v = v.astype(bool)
    return v


def _check_pair(pred: np.ndarray, gt: np.ndarray, what: str) -> None:
    if pred.shape != gt.shape:
        raise DabenchError(f"{what}: prediction shape {pred.shape} != ground-truth {gt.shape}")


def _check_finite_gt(gt: np.ndarray, name: str, where: np.ndarray | None = None) -> None:
    ok = np.isfinite(gt).all(axis=-1)
    if where is not None:
        ok |= ~where
    if not ok.all():
        n, k = np.argwhere(~ok)[0]
        raise DabenchError(
            f"{name} has {int((~ok).sum())} non-finite joint(s) (first: sample {n}, joint {k}); "
            "ground truth must be finite"
        )


# --------------------------------------------------------------------------------------------
# 3D building blocks
# --------------------------------------------------------------------------------------------


def root_relative(x: np.ndarray, joint_set: str | JointSet) -> np.ndarray:
    """``x[..., K, D]`` minus the joint set's evaluation root (hip midpoint for common14)."""
    js = _resolve(joint_set)
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf in a diverged prediction is expected
        return x - js.root_position(x)[..., None, :]


def joint_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean error per joint, ``[..., K, D] -> [..., K]``; ``inf`` where non-finite."""
    d = np.asarray(pred, dtype=np.float64) - np.asarray(gt, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.sqrt(np.einsum("...d,...d->...", d, d))
    # NaN would silently drop out of comparisons; inf keeps "wrong" explicit everywhere.
    e[~np.isfinite(e)] = np.inf
    return e


def _finite_samples(x: np.ndarray) -> np.ndarray:
    return np.isfinite(x).all(axis=(-1, -2))


@dataclass(frozen=True)
class _Similarity:
    """Both similarity fits of one batch, from a single SVD.

    aligned = s * y @ r + gt_centroid, where y is the centred prediction; ``x`` is the centred
    GT, so the residual is s * y @ r - x.  ``mirrored`` marks samples whose best orthogonal map
    is a reflection: only there do the two fits differ.
    """

    y: np.ndarray
    x: np.ndarray
    mu_g: np.ndarray
    r_rot: np.ndarray
    s_rot: np.ndarray
    r_refl: np.ndarray
    s_refl: np.ndarray
    mirrored: np.ndarray


def _umeyama(pred: np.ndarray, gt: np.ndarray) -> _Similarity:
    """Least-squares similarity fits of pred to gt ``[N, K, D]`` (Umeyama 1991).  Non-finite
    samples must be masked out by the caller (LAPACK fails on NaN)."""
    mu_p = pred.mean(axis=-2, keepdims=True)
    mu_g = gt.mean(axis=-2, keepdims=True)
    y = pred - mu_p
    x = gt - mu_g
    u, sv, vt = np.linalg.svd(np.swapaxes(y, -1, -2) @ x)
    r_refl = u @ vt
    # det(U Vt) = -1 means the best orthogonal map is a reflection; flipping the axis of the
    # smallest singular value gives the best proper rotation.
    mirrored = np.linalg.det(r_refl) < 0
    r_rot = r_refl.copy()
    sv_rot = sv.copy()
    if mirrored.any():
        u_m = u[mirrored]
        u_m[..., :, -1] *= -1.0
        r_rot[mirrored] = u_m @ vt[mirrored]
        sv_rot[mirrored, -1] *= -1.0
    var = np.einsum("...kd,...kd->...", y, y)
    # A collapsed prediction (all joints equal) has no scale; s = 0 maps it to the GT centroid.
    safe = np.where(var > 0, var, 1.0)
    s_rot = np.where(var > 0, sv_rot.sum(-1) / safe, 0.0)
    s_refl = np.where(var > 0, sv.sum(-1) / safe, 0.0)
    return _Similarity(y, x, mu_g, r_rot, s_rot, r_refl, s_refl, mirrored)


def procrustes_align(
    pred: np.ndarray, gt: np.ndarray, allow_reflection: bool = False
) -> np.ndarray:
    """Per-sample similarity alignment (rotation, translation, isotropic scale) of ``pred`` to
    ``gt``, both ``[..., K, D]``; returns the aligned prediction.

    Least squares (Umeyama), centred on the centroid of all joints.  ``allow_reflection=False``
    forces det(R) = +1 (VideoPose3D / mmpose); ``True`` allows mirror images, as FreiHAND's
    ``align_w_scale`` (scipy ``orthogonal_procrustes``) does.  Samples with a non-finite
    prediction come back as NaN.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim < 2:
        raise DabenchError(f"procrustes_align: shapes {pred.shape} and {gt.shape} must match")
    ok = _finite_samples(pred) & _finite_samples(gt)
    p = np.where(ok[..., None, None], pred, 0.0)
    g = np.where(ok[..., None, None], gt, 0.0)
    fit = _umeyama(p, g)
    r, s = (fit.r_refl, fit.s_refl) if allow_reflection else (fit.r_rot, fit.s_rot)
    aligned = s[..., None, None] * (fit.y @ r) + fit.mu_g
    aligned[~ok] = np.nan
    return aligned


def _pa_errors_both(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, K] errors after the proper and the reflection-allowed fit; inf for bad samples."""
    ok = _finite_samples(pred)
    p = pred if ok.all() else np.where(ok[..., None, None], pred, 0.0)
    fit = _umeyama(p, gt)
    proper = joint_errors(fit.s_rot[:, None, None] * (fit.y @ fit.r_rot), fit.x)
    refl = proper.copy()
    m = fit.mirrored
    if m.any():
        refl[m] = joint_errors(fit.s_refl[m, None, None] * (fit.y[m] @ fit.r_refl[m]), fit.x[m])
    proper[~ok] = np.inf
    refl[~ok] = np.inf
    return proper, refl


def pa_mpjpe_errors(pred: np.ndarray, gt: np.ndarray, allow_reflection: bool = False) -> np.ndarray:
    """``[N, K]`` joint errors after :func:`procrustes_align` (inf for non-finite samples)."""
    pred = _as_points(pred, "pred")
    gt = _as_points(gt, "gt")
    _check_pair(pred, gt, "pa_mpjpe")
    proper, refl = _pa_errors_both(pred, gt)
    return refl if allow_reflection else proper


def n_mpjpe_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``[N, K]`` joint errors after the per-sample least-squares scale
    ``s* = <pred, gt> / <pred, pred>`` (Rhodin et al.; no centring, so pass root-relative
    poses).  A non-finite sample is inf everywhere; an all-zero prediction keeps s = 0."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    _check_pair(pred, gt, "n_mpjpe")
    ok = _finite_samples(pred)
    p = np.where(ok[..., None, None], pred, 0.0)
    num = np.einsum("...kd,...kd->...", p, gt)
    den = np.einsum("...kd,...kd->...", p, p)
    s = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    e = joint_errors(s[..., None, None] * p, gt)
    e[~ok] = np.inf
    return e


def _maybe_root_relative(
    pred: np.ndarray, gt: np.ndarray, joint_set: str | JointSet | None
) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if joint_set is not None:
        pred, gt = root_relative(pred, joint_set), root_relative(gt, joint_set)
    return pred, gt


def mpjpe(pred: np.ndarray, gt: np.ndarray, joint_set: str | JointSet | None = None) -> float:
    """Mean Euclidean joint error (mm) over all (sample, joint) pairs.  With ``joint_set``
    both poses are made root-relative first; without, they are compared as given.  ``inf``
    if any prediction is non-finite."""
    pred, gt = _maybe_root_relative(pred, gt, joint_set)
    _check_pair(pred, gt, "mpjpe")
    return float(joint_errors(pred, gt).mean())


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray, allow_reflection: bool = False) -> float:
    """Mean joint error (mm) after per-sample similarity Procrustes (proper rotation unless
    ``allow_reflection``).  Translation-invariant, so roots do not matter."""
    return float(pa_mpjpe_errors(pred, gt, allow_reflection).mean())


def n_mpjpe(pred: np.ndarray, gt: np.ndarray, joint_set: str | JointSet | None = None) -> float:
    """Mean joint error (mm) after per-sample optimal scale; root-relative first when
    ``joint_set`` is given (the scale fit has no centring, so the root matters)."""
    pred, gt = _maybe_root_relative(pred, gt, joint_set)
    return float(n_mpjpe_errors(pred, gt).mean())


# --------------------------------------------------------------------------------------------
# PCK / AUC
# --------------------------------------------------------------------------------------------


def _select(err: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    err = np.asarray(err, dtype=np.float64)
    if mask is None:
        return err.ravel()
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != err.shape:
        raise DabenchError(f"mask shape {mask.shape} != error shape {err.shape}")
    return err[mask]


def pck(err: np.ndarray, thr: float, strict: bool = True, mask: np.ndarray | None = None) -> float:
    """% of errors below ``thr`` (``<`` if ``strict``, else ``<=``) over the entries selected by
    ``mask`` (all if None).  NaN/inf errors count as wrong; NaN if nothing is selected."""
    e = _select(err, mask)
    if e.size == 0:
        return math.nan
    hit = e < thr if strict else e <= thr
    return 100.0 * float(hit.mean())


def _curve_counts(err: np.ndarray, thresholds: np.ndarray, strict: bool) -> np.ndarray:
    """For each threshold, how many errors pass it: ``err[..., M] -> [..., T]`` along the last
    axis, one searchsorted pass instead of an [M, T] comparison."""
    t = thresholds.size
    side = "right" if strict else "left"
    # idx = number of thresholds the error does not pass; it passes threshold j iff j >= idx.
    idx = np.searchsorted(thresholds, np.nan_to_num(err, nan=np.inf), side=side)
    lead = idx.shape[:-1]
    if idx.shape[-1] == 0:  # no sample (a 2D-only set's 3D curves)
        return np.zeros((*lead, t), dtype=np.int64)
    flat = idx.reshape(-1, idx.shape[-1])
    offs = (np.arange(flat.shape[0]) * (t + 1))[:, None]
    hist = np.bincount((flat + offs).ravel(), minlength=flat.shape[0] * (t + 1))
    hist = hist.reshape(flat.shape[0], t + 1)
    return np.cumsum(hist[:, :t], axis=1).reshape(*lead, t)


def _auc3d_from_frac(frac: np.ndarray) -> np.ndarray:
    return 100.0 * frac.mean(axis=-1)


def _auc_hand_from_frac(frac: np.ndarray) -> np.ndarray:
    t = AUC_HAND_THRESHOLDS_MM
    return 100.0 * trapezoid(frac, t, axis=-1) / (t[-1] - t[0])


def auc_3dhp(err: np.ndarray, mask: np.ndarray | None = None) -> float:
    """MPI-INF-3DHP AUC in %: strict PCK at :data:`AUC3D_THRESHOLDS_MM` (0:5:150 mm, 31 values
    including 0), averaged (rectangle rule, as the official script).  Perfect = 30/31 * 100."""
    e = _select(err, mask)
    if e.size == 0:
        return math.nan
    frac = _curve_counts(e, AUC3D_THRESHOLDS_MM, strict=True) / e.size
    return float(_auc3d_from_frac(frac))


def auc_hand(err: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Hand AUC 20-50 mm in %: PCK with ``<=`` at :data:`AUC_HAND_THRESHOLDS_MM`, trapezoid
    integral divided by the 30 mm range (hand3d ``calc_auc``).  Perfect = 100."""
    e = _select(err, mask)
    if e.size == 0:
        return math.nan
    frac = _curve_counts(e, AUC_HAND_THRESHOLDS_MM, strict=False) / e.size
    return float(_auc_hand_from_frac(frac))


# --------------------------------------------------------------------------------------------
# 2D
# --------------------------------------------------------------------------------------------


def _check_2d(
    pred2d: np.ndarray, gt2d: np.ndarray, vis: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = _as_points(pred2d, "pred2d", 2)
    g = _as_points(gt2d, "gt2d", 2)
    _check_pair(p, g, "2D")
    v = _as_vis(vis, p.shape[:2])
    _check_finite_gt(g, "gt2d", where=v)
    return p, g, v


def pck2d(
    pred2d: np.ndarray,
    gt2d: np.ndarray,
    vis: np.ndarray,
    image_size: int | tuple[int, int],
    fraction: float = PCK2D_FRACTION,
) -> float:
    """% of visible joints whose sub-pixel 2D error (crop px) is ``< fraction * max(H, W)``,
    micro-averaged over visible (sample, joint) pairs; NaN if nothing is visible."""
    p, g, v = _check_2d(pred2d, gt2d, vis)
    h, w = _size_pair(image_size, "image_size")
    return pck(joint_errors(p, g), fraction * max(h, w), strict=True, mask=v)


def _pckh_outcomes(
    pred2d: np.ndarray, gt2d: np.ndarray, vis: np.ndarray, head_size: Any, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(correct, counted)`` [N, K] bool; a sample whose head size is not a positive
    number is not counted (it has no normaliser)."""
    p, g, v = _check_2d(pred2d, gt2d, vis)
    hs = np.asarray(head_size, dtype=np.float64)
    if hs.shape != p.shape[:1]:
        raise DabenchError(f"head_size must be [N] = [{p.shape[0]}], got {list(hs.shape)}")
    counted = v & (np.isfinite(hs) & (hs > 0))[:, None]
    with np.errstate(invalid="ignore"):
        return counted & (joint_errors(p, g) <= threshold * hs[:, None]), counted


def pckh(
    pred2d: np.ndarray,
    gt2d: np.ndarray,
    vis: np.ndarray,
    head_size: np.ndarray,
    threshold: float = PCKH_THRESHOLD,
) -> float:
    """MPII's PCKh in %: visible joints whose 2D error is ``<=`` threshold x the sample's
    ``head_size`` [N] (px of the stored crop; MPII's head size is 0.6 x the head-box
    diagonal), micro over every counted (sample, joint). Coordinates are 0-based, so
    MATLAB's +1 shift does not apply. NaN if nothing is counted."""
    correct, counted = _pckh_outcomes(pred2d, gt2d, vis, head_size, threshold)
    n = int(counted.sum())
    return 100.0 * float(correct.sum()) / n if n else math.nan


def tll_quantize(
    xy: np.ndarray, image_size: int | tuple[int, int], heatmap_size: int | tuple[int, int]
) -> np.ndarray:
    """Crop px ``(x, y)`` -> the heatmap cell ``(col, row)`` TLL's pipeline puts it in.

    TLL's target encoder (``generate_target``) centres a joint's Gaussian on cell
    ``int(px / s + 0.5)`` with stride ``s = image / heatmap`` per axis — a corner-aligned grid
    (cell j centred on px ``j*s``) — and its ``accuracy`` reads cells back by argmax.  A
    prediction at px is scored in the cell a network trained on those targets would peak in,
    the same rule, so a perfect prediction scores in GT's cell.  The cell is clipped to the
    grid, because an argmax always lies on it; a non-finite coordinate gives NaN.

    This is not the pixel-centred rule ``floor((px + 0.5) / s)`` of the harness's own
    heatmaps (cell j centred on px ``(j + 0.5)*s − 0.5``): at stride 4 the two put 37.5% of
    uniformly spread coordinates in different cells, so only TLL's rule is comparable with
    TLL-based papers (metric suite v2; v1 used the pixel-centred rule).
    """
    h, w = _size_pair(image_size, "image_size")
    hh, hw = _size_pair(heatmap_size, "heatmap_size")
    xy = np.asarray(xy, dtype=np.float64)
    cell = np.stack([_tll_cell(xy[..., 0], w, hw), _tll_cell(xy[..., 1], h, hh)], axis=-1)
    cell[~np.isfinite(xy).all(axis=-1)] = np.nan
    return cell


def _tll_unclipped(v: np.ndarray, image_px: int, heatmap_px: int) -> np.ndarray:
    """TLL's ``int(px / s + 0.5)`` (truncation towards zero); NaN stays NaN."""
    with np.errstate(invalid="ignore"):
        return np.trunc(v / (image_px / heatmap_px) + 0.5)


def _tll_cell(v: np.ndarray, image_px: int, heatmap_px: int) -> np.ndarray:
    """One axis of :func:`tll_quantize`; inf clips to the border, NaN stays NaN."""
    return np.clip(_tll_unclipped(v, image_px, heatmap_px), 0.0, heatmap_px - 1.0)


def _tll_on_grid(v: np.ndarray, image_px: int, heatmap_px: int) -> np.ndarray:
    """Whether TLL draws a GT Gaussian at all: its encoder zeroes a joint whose Gaussian
    (radius 3σ cells) lies wholly off the grid, ``ul >= size or br < 0``."""
    mu = _tll_unclipped(v, image_px, heatmap_px)
    radius = 3 * TLL_SIGMA
    with np.errstate(invalid="ignore"):
        return (mu - radius < heatmap_px) & (mu + radius + 1 >= 0)


def _tll_outcomes(
    p: np.ndarray,
    g: np.ndarray,
    v: np.ndarray,
    image_size: tuple[int, int],
    heatmap_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """(correct, valid) ``[N, K]`` bool under TLL ``accuracy``."""
    (h, w), (hh, hw) = image_size, heatmap_size
    gx, gy = _tll_cell(g[..., 0], w, hw), _tll_cell(g[..., 1], h, hh)
    drawn = _tll_on_grid(g[..., 0], w, hw) & _tll_on_grid(g[..., 1], h, hh)
    # TLL's calc_dists drops GT whose argmax has x <= 1 or y <= 1: that is its "missing"
    # sentinel (an all-zero heatmap — invisible, or drawn wholly off the grid — argmaxes to
    # (0, 0)); it also drops drawn joints there.  (NaN GT of invisible joints compares False,
    # i.e. invalid, as it should.)
    with np.errstate(invalid="ignore"):
        valid = v & drawn & (gx > 1) & (gy > 1)
        # TLL normalises by np.array([h, w]) / 10 applied to (x, y): x by h/10, y by w/10.
        # Kept for compatibility; it only matters for non-square heatmaps.
        dx = (_tll_cell(p[..., 0], w, hw) - gx) / (hh / 10.0)
        dy = (_tll_cell(p[..., 1], h, hh) - gy) / (hw / 10.0)
        d = np.sqrt(dx * dx + dy * dy)
    # A non-finite prediction is wrong even if clipping would put it on the GT's border cell.
    correct = valid & (d < TLL_THRESHOLD) & np.isfinite(p).all(axis=-1)
    return correct, valid


def _macro(correct: np.ndarray, valid: np.ndarray) -> float:
    """TLL avg_acc: mean over joints with >= 1 valid sample of per-joint accuracy; NaN if none."""
    n_valid = valid.sum(axis=0)
    has = n_valid > 0
    if not has.any():
        return math.nan
    return float((correct.sum(axis=0)[has] / n_valid[has]).mean())


def pck_tll(
    pred2d: np.ndarray,
    gt2d: np.ndarray,
    vis: np.ndarray,
    image_size: int | tuple[int, int],
    heatmap_size: int | tuple[int, int] | None = None,
    batch_size: int | None = None,
) -> float:
    """Transfer-Learning-Library ``accuracy`` (the DA papers' "PCK@0.05"), in %.

    Both GT and prediction are quantised to the heatmap grid (:func:`tll_quantize`), the
    distance is normalised per axis by heatmap_size / 10 and a joint is correct if it is
    ``< 0.5`` (= 0.05 x heatmap side).  GT that is invisible, lies wholly off the grid (TLL
    draws no Gaussian) or whose cell has x <= 1 or y <= 1 is ignored (TLL's sentinel).
    Per-joint accuracy, then the macro mean over joints with at least one valid sample.

    ``batch_size=None`` computes that once over the whole set (what :func:`evaluate` reports).
    With ``batch_size``, consecutive batches are scored separately and their macro accuracies
    averaged weighted by batch size, as TLL's ``validate`` loop does (``AverageMeter.update(acc,
    x.size(0))``); a batch without any valid joint scores 0, as TLL's ``accuracy`` returns.
    (TLL's ``group_accuracy`` additionally averages the -1 "no valid joint" placeholders into
    its group means; that bug is not reproduced.)
    """
    p, g, v = _check_2d(pred2d, gt2d, vis)
    size = _size_pair(image_size, "image_size")
    hm = _heatmap_pair(size, heatmap_size)
    correct, valid = _tll_outcomes(p, g, v, size, hm)
    if batch_size is None:
        return 100.0 * _macro(correct, valid)
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size <= 0:
        raise DabenchError(f"batch_size must be a positive int, got {batch_size!r}")
    n = correct.shape[0]
    if n == 0:
        return math.nan
    starts = np.arange(0, n, int(batch_size))
    c_b = np.add.reduceat(correct.astype(np.int64), starts, axis=0)  # [B, K]
    v_b = np.add.reduceat(valid.astype(np.int64), starts, axis=0)
    has = v_b > 0
    acc = np.where(has, c_b / np.where(has, v_b, 1), 0.0)
    cnt = has.sum(axis=1)
    batch_acc = np.where(cnt > 0, acc.sum(axis=1) / np.maximum(cnt, 1), 0.0)
    weights = np.diff(np.append(starts, n))
    return 100.0 * float((batch_acc * weights).sum() / n)


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------


@dataclass
class _Pooled:
    """Per-joint sufficient statistics of one metric; groups and overall are sums of them."""

    num: np.ndarray  # [K] or [K, T]
    den: np.ndarray  # [K]
    kind: str  # "mean" | "pct" | "auc3d" | "auc_hand"

    def value(self, idx: np.ndarray | slice | None = None) -> np.ndarray:
        """Per joint (idx None) or pooled over the joints in idx."""
        num, den = self.num, self.den.astype(np.float64)
        if idx is not None:
            num, den = num[idx].sum(axis=0), den[idx].sum(axis=0)
        den_b = den[..., None] if num.ndim > np.ndim(den) else den
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(den_b > 0, num / np.where(den_b > 0, den_b, 1.0), np.nan)
        if self.kind == "mean":
            return frac
        if self.kind == "pct":
            return 100.0 * frac
        if self.kind == "auc3d":
            return _auc3d_from_frac(frac)
        return _auc_hand_from_frac(frac)


def _rows(err: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Errors of the selected samples placed back into [N, K], NaN in the others."""
    out = np.full((rows.size, *err.shape[1:]), np.nan)
    out[rows] = err
    return out


def _mean_stats(err: np.ndarray, mask: np.ndarray | None = None) -> _Pooled:
    if mask is None:
        return _Pooled(err.sum(axis=0), np.full(err.shape[1], err.shape[0]), "mean")
    # where(), not err * mask: inf * 0 would be NaN.
    return _Pooled(np.where(mask, err, 0.0).sum(axis=0), mask.sum(axis=0), "mean")


def flip_errors(
    pred2d: np.ndarray, gt2d: np.ndarray, vis: np.ndarray, joint_set: str | JointSet
) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the mean 2D error over visible joints of the prediction as it is and with
    its left and right joints swapped (the joint set's flip pairs), [N] each."""
    js = _resolve(joint_set)
    p2, g2, v = _check_2d(pred2d, gt2d, vis)
    swap = np.arange(js.num_joints)
    for a, b in js.flip_pairs:
        swap[a], swap[b] = b, a

    def mean_err(pred: np.ndarray) -> np.ndarray:
        err = np.where(v, joint_errors(pred, g2), 0.0)
        return err.sum(axis=1) / np.maximum(v.sum(axis=1), 1)

    return mean_err(p2), mean_err(p2[:, swap])


def ambiguity_ratio(
    pred2d: np.ndarray,
    gt2d: np.ndarray,
    vis: np.ndarray,
    joint_set: str | JointSet,
    groups: np.ndarray,
) -> float:
    """Mask as Supervision's ambiguity ratio (S003 Eq. 11), in %: over the groups of views
    of one moment (``groups`` [N]: samples with one id are the N_g views of one scene), the
    mean of min(f, N_g − f) / N_g, f the number of views whose prediction has a lower 2D error
    with left and right swapped. 0 when every view agrees on which side is left (right or
    wrong alike), 50 % when half the views disagree. Eq. 11 as printed divides by the number
    of scenes only (r ≤ N/2, yet the paper reports percentages up to 48.7 %): we read it as
    also divided by N. Whole skeletons are flipped (the paper's "keypoints adding the
    left-right flip"), not single joints as the authors' later code does. Groups of one view
    are left out; NaN when no group has two."""
    plain, flipped = flip_errors(pred2d, gt2d, vis, joint_set)
    groups = np.asarray(groups)
    if groups.shape != plain.shape:
        raise DabenchError(f"groups must be [N] = {list(plain.shape)}, got {list(groups.shape)}")
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    f = np.bincount(inverse, weights=(flipped < plain).astype(float), minlength=len(counts))
    multi = counts >= 2
    if not multi.any():
        return math.nan
    n = counts[multi]
    return float(100.0 * (np.minimum(f[multi], n - f[multi]) / n).mean())


def evaluate(
    pred2d: np.ndarray,
    gt2d: np.ndarray,
    pred3d: np.ndarray,
    gt3d: np.ndarray,
    vis: np.ndarray,
    joint_set: str | JointSet,
    image_size: int | tuple[int, int],
    heatmap_size: int | tuple[int, int] | None = None,
    groups: np.ndarray | None = None,
    head_size: np.ndarray | None = None,
) -> MetricReport:
    """All metrics of the suite on one test set (vectorised over samples).

    Args: ``pred2d``/``gt2d`` ``[N, K, 2]`` crop px; ``pred3d``/``gt3d`` ``[N, K, 3]`` mm in
    any common frame; ``vis`` ``[N, K]`` bool; ``image_size`` crop (H, W); ``heatmap_size``
    for ``pck2d_tll`` (default ``image_size // 4``).

    Metrics (3D over all joints, 2D over visible joints; see the module docstring):

    * ``mpjpe`` (mm): root-relative mean per-joint position error.
    * ``pa_mpjpe`` (mm): after per-sample similarity Procrustes with a proper rotation.
    * ``pa_mpjpe_refl`` (mm): same, reflections allowed (FreiHAND ``align_w_scale``); only for
      comparability with hand papers.
    * ``n_mpjpe`` (mm): after per-sample optimal scale of the root-relative prediction.
    * ``epe`` (mm, ``hand21`` only): root-relative EPE, numerically equal to ``mpjpe``.
    * ``pck3d_150`` (%): root-relative error ``< 150`` mm.
    * ``auc3d_0_150`` (%): 3DHP AUC, :func:`auc_3dhp` (perfect = 96.77).
    * ``auc_20_50`` (%): hand AUC 20-50 mm, :func:`auc_hand` (perfect = 100).
    * ``pck2d_005`` (%): 2D error ``< 0.05 * max(H, W)`` px, sub-pixel, micro over visible.
    * ``pck2d_tll`` (%): :func:`pck_tll` at dataset level (``batch_size=None``); per joint its
      per-joint accuracy, per group the macro mean over the group's joints.
    * ``err2d_pct`` (% of max(H, W)) and ``err2d_px`` (px): mean 2D error over visible joints
      (Mask as Supervision's "2D MSE-%").
    * ``ambiguity_pct`` (%, overall only, where ``groups`` [N] says which samples are views
      of one moment and the joint set has left and right): :func:`ambiguity_ratio`.
    * ``pckh_50`` (%, where ``head_size`` [N] px is given): :func:`pckh` at 0.5, micro over
      visible joints; overall without pelvis and thorax (MPII's total), per joint and per
      group over all of them.

    Samples without 3D labels (all NaN) are left out of the 3D metrics (NaN if none has any).

    Every metric is also given per joint (``[K]``, NaN where a joint has no valid sample) and
    per group of the joint set, pooled over the group's (sample, joint) pairs.
    """
    js = _resolve(joint_set)
    k = js.num_joints
    p3 = _as_points(pred3d, "pred3d", 3)
    g3 = _as_points(gt3d, "gt3d", 3)
    _check_pair(p3, g3, "3D")
    if p3.shape[1] != k:
        raise DabenchError(
            f"joint set {js.name!r} has {k} joints, but the 3D arrays have {p3.shape[1]}"
        )
    if p3.shape[0] == 0:
        raise DabenchError("evaluate needs at least one sample, got N = 0")
    p2, g2, v = _check_2d(pred2d, gt2d, vis)
    if p2.shape[:2] != p3.shape[:2]:
        raise DabenchError(
            f"2D arrays have [N, K] = {list(p2.shape[:2])} but 3D arrays {list(p3.shape[:2])}"
        )
    has3d = ~np.isnan(g3).all(axis=(1, 2))
    _check_finite_gt(g3, "gt3d", where=np.broadcast_to(has3d[:, None], g3.shape[:2]))
    size = _size_pair(image_size, "image_size")
    hm = _heatmap_pair(size, heatmap_size)
    side = float(max(size))

    # --- 3D, over the samples with 3D labels
    g_rr = root_relative(g3[has3d], js)
    p_rr = root_relative(p3[has3d], js)
    err3d = _rows(joint_errors(p_rr, g_rr), has3d)
    err_pa, err_pa_refl = (_rows(e, has3d) for e in _pa_errors_both(p_rr, g_rr))
    err_n = _rows(n_mpjpe_errors(p_rr, g_rr), has3d)
    labelled = np.broadcast_to(has3d[:, None], err3d.shape)

    # Thresholds 0:5:150 include 150, so PCK@150 is one column of the AUC curve.
    curve3d = _curve_counts(err3d[has3d].T, AUC3D_THRESHOLDS_MM, strict=True)  # [K, 31]
    i150 = int(np.flatnonzero(AUC3D_THRESHOLDS_MM == PCK3D_THRESHOLD_MM)[0])
    n_all = np.full(k, int(has3d.sum()))
    stats: dict[str, _Pooled] = {
        "mpjpe": _mean_stats(err3d, labelled),
        "pa_mpjpe": _mean_stats(err_pa, labelled),
        "pa_mpjpe_refl": _mean_stats(err_pa_refl, labelled),
        "n_mpjpe": _mean_stats(err_n, labelled),
    }
    if js.name == "hand21":
        stats["epe"] = stats["mpjpe"]
    stats["pck3d_150"] = _Pooled(curve3d[:, i150], n_all, "pct")
    stats["auc3d_0_150"] = _Pooled(curve3d, n_all, "auc3d")
    stats["auc_20_50"] = _Pooled(
        _curve_counts(err3d[has3d].T, AUC_HAND_THRESHOLDS_MM, strict=False), n_all, "auc_hand"
    )

    # --- 2D
    err2d = joint_errors(p2, g2)
    stats["pck2d_005"] = _Pooled(
        (v & (err2d < PCK2D_FRACTION * side)).sum(axis=0), v.sum(axis=0), "pct"
    )
    tll_correct, tll_valid = _tll_outcomes(p2, g2, v, size, hm)
    tll_joint = _Pooled(tll_correct.sum(axis=0), tll_valid.sum(axis=0), "pct").value()
    err2d_stats = _mean_stats(err2d, v)
    stats["err2d_pct"] = _Pooled(err2d_stats.num * (100.0 / side), err2d_stats.den, "mean")
    stats["err2d_px"] = err2d_stats

    def tll_macro(idx: np.ndarray | slice) -> float:
        vals = tll_joint[idx]
        vals = vals[~np.isnan(vals)]
        return float(vals.mean()) if vals.size else math.nan

    names = metric_names(js)
    if head_size is not None:
        correct, counted = _pckh_outcomes(p2, g2, v, head_size, PCKH_THRESHOLD)
        stats["pckh_50"] = _Pooled(correct.sum(axis=0), counted.sum(axis=0), "pct")
        names = (*names, "pckh_50")

    def pooled(idx: np.ndarray | slice) -> dict[str, float]:
        return {
            m: tll_macro(idx) if m == "pck2d_tll" else float(stats[m].value(idx)) for m in names
        }

    every = slice(None)
    overall = pooled(every)
    if "pckh_50" in stats:
        counted = [j for j, name in enumerate(js.joints) if name not in PCKH_EXCLUDED]
        overall["pckh_50"] = float(stats["pckh_50"].value(np.asarray(counted)))
    if groups is not None and js.flip_pairs:  # a joint set without sides has no flips
        overall["ambiguity_pct"] = ambiguity_ratio(p2, g2, v, js, groups)
    per_joint = {m: tll_joint if m == "pck2d_tll" else stats[m].value() for m in names}
    per_group = {g: pooled(np.asarray(idx)) for g, idx in js.groups.items()}

    err2d_vis = np.where(v, err2d, np.nan)
    per_sample = {
        "err3d": err3d,
        "err3d_pa": err_pa,
        "err3d_pa_refl": err_pa_refl,
        "err3d_n": err_n,
        "err2d": err2d_vis,
        "vis": v,
        "tll_valid": tll_valid,
        "tll_correct": tll_correct,
    }
    return MetricReport(
        overall=overall,
        per_joint=per_joint,
        per_group=per_group,
        per_sample=per_sample,
        version=METRICS_VERSION,
        joint_set=js.name,
        joints=js.joints,
    )


def metric_names(joint_set: str | JointSet) -> tuple[str, ...]:
    """The metric names :func:`evaluate` reports for ``joint_set``, in order."""
    js = _resolve(joint_set)
    base = ["mpjpe", "pa_mpjpe", "pa_mpjpe_refl", "n_mpjpe"]
    if js.name == "hand21":
        base.append("epe")
    return (
        *base,
        "pck3d_150",
        "auc3d_0_150",
        "auc_20_50",
        "pck2d_005",
        "pck2d_tll",
        "err2d_pct",
        "err2d_px",
    )
