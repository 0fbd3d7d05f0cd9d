"""Maximum mean discrepancy (MMD) losses: DDC's linear-kernel MMD and DAN's multi-kernel MMD.

Notation: ``x`` [n, d] source features, ``y`` [n, d] target features, k a kernel.

* :func:`linear_mmd2` — DDC (Tzeng et al., 2014): ||mean(x) − mean(y)||², the (biased, V-statistic)
  MMD² of the linear kernel k(a, b) = a·b.
* :func:`mk_mmd2` — DAN (Long et al., ICML 2015): MMD² of an equal-weight mixture of Gaussian
  kernels whose bandwidths are multiples of the mean pairwise squared distance of the batch.

Both estimators of :func:`mk_mmd2` are *unbiased* (E[estimate] = population MMD²) and need
equal source and target batch sizes:

* ``"linear"`` — Gretton et al. (JMLR 2012) Lemma 14 as used by Long et al. (2015, Eq. 4): the
  batch is cut into m = ⌊n/2⌋ disjoint quad-tuples z_i = (x_{2i−1}, x_{2i}, y_{2i−1}, y_{2i}),
  g(z_i) = k(x_{2i−1}, x_{2i}) + k(y_{2i−1}, y_{2i}) − k(x_{2i−1}, y_{2i}) − k(x_{2i}, y_{2i−1}),
  and d² = (1/m) Σ_i g(z_i) (= (2/n) Σ_i g(z_i) for even n; an odd last sample is dropped).
  O(n·d) time and memory. tllib's ``MultipleKernelMaximumMeanDiscrepancy(linear=True)`` uses
  instead the n *overlapping* pairs (i, i+1 mod n):
  (1/n) Σ_i [k(x_i, x_{i+1}) + k(y_i, y_{i+1}) − k(x_i, y_{i+1}) − k(x_{i+1}, y_i)].
  and adds the constant 2/(n−1) to the result (as for its quadratic form, below). Every term
  of either form is an unbiased estimate of MMD² (each kernel argument pair is two distinct
  samples), so the two have the same expectation up to tllib's constant; tllib's averages
  twice as many, correlated, terms (somewhat lower variance on one batch), ours averages
  the independent ones of Long et al. (the form whose variance the DAN paper analyses; more
  variance per batch). The constant changes the printed value, never the gradient.
* ``"quadratic"`` — the U-statistic MMD²_u (Gretton et al. 2012, Eq. 3):
  1/(n(n−1)) Σ_{i≠j} [k(x_i, x_j) + k(y_i, y_j)] − 2/n² Σ_{i,j} k(x_i, y_j). tllib's
  ``linear=False`` computes the same quantity plus a constant 2/(n−1), which changes neither
  the gradient nor anything else but the printed value; MMD²_u itself can be slightly
  negative when the two distributions are equal.

Kernels (tllib's ``GaussianKernel``): k_α(a, b) = exp(−||a − b||² / (2 α σ̄²)), σ̄² = the mean
squared distance over all (2n)² ordered pairs of the concatenated batch (diagonal included, as
tllib), detached so that the bandwidth is a statistic, not something the loss can push. The
mixture is the plain mean over α (the DAN paper's β_u = 1/m with Σ β_u = 1); tllib *sums* the
kernels, so its MK-MMD is m (= 5) times ours at the same trade-off.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from bench.errors import DabenchError

# Long et al. / tllib example: 5 kernels, 2^k × the mean pairwise squared distance, k = −3…1.
DEFAULT_ALPHAS: tuple[float, ...] = (2.0**-3, 2.0**-2, 2.0**-1, 1.0, 2.0)
ESTIMATORS: tuple[str, ...] = ("linear", "quadratic")


def linear_mmd2(x: Tensor, y: Tensor) -> Tensor:
    """DDC's linear-kernel MMD²: ||mean(x) − mean(y)||² for x [n, d], y [m, d]."""
    _check_features(x, y, equal=False)
    with _full_precision(x):
        delta = _at_least_fp32(x).mean(0) - _at_least_fp32(y).mean(0)
        return delta.dot(delta)


def mean_pairwise_sq_dist(z: Tensor) -> Tensor:
    """Mean of ||z_i − z_j||² over all ordered pairs (diagonal included) of z [N, d], detached.

    Uses mean_{i,j} ||z_i − z_j||² = 2 (mean_i ||z_i||² − ||mean_i z_i||²): O(N·d), so the
    linear-time estimator stays linear.
    """
    z = _at_least_fp32(z.detach())
    centred = z - z.mean(0, keepdim=True)
    return 2.0 * centred.pow(2).sum(1).mean()


def gaussian_kernels(
    sq_dist: Tensor, base: Tensor, alphas: Sequence[float] = DEFAULT_ALPHAS
) -> Tensor:
    """Equal-weight mixture (1/m) Σ_α exp(−d² / (2 α σ̄²)) of Gaussian kernels, elementwise.

    ``sq_dist`` holds squared distances of any shape (a full matrix or a list of pairs);
    ``base`` is σ̄², normally :func:`mean_pairwise_sq_dist` of the concatenated batch.
    """
    if not alphas:
        raise DabenchError("gaussian_kernels needs at least one bandwidth multiplier")
    # All-identical features give σ̄² = 0: every kernel value is then 1 and MMD² is 0.
    base = base.clamp_min(torch.finfo(torch.float32).tiny)
    total = torch.exp(-sq_dist / (2.0 * alphas[0] * base))
    for a in alphas[1:]:
        total = total + torch.exp(-sq_dist / (2.0 * a * base))
    return total / len(alphas)


def mk_mmd2(
    x: Tensor,
    y: Tensor,
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    estimator: str = "linear",
    base: float | Tensor | None = None,
) -> Tensor:
    """DAN's multi-kernel MMD² between x [n, d] and y [n, d] (see the module docstring).

    ``base`` fixes σ̄² instead of taking it from the batch: with a batch-dependent bandwidth
    the kernel itself is random, and "unbiased" holds for the kernel that is then drawn.
    """
    if estimator not in ESTIMATORS:
        raise DabenchError(f"unknown MMD estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}")
    _check_features(x, y, equal=True)
    with _full_precision(x):
        x, y = _at_least_fp32(x), _at_least_fp32(y)
        if base is None:
            base = mean_pairwise_sq_dist(torch.cat([x, y]))
        else:
            base = torch.as_tensor(base, dtype=x.dtype, device=x.device)
        if estimator == "linear":
            return _linear_estimate(x, y, base, alphas)
        return _quadratic_estimate(x, y, base, alphas)


def _linear_estimate(x: Tensor, y: Tensor, base: Tensor, alphas: Sequence[float]) -> Tensor:
    m = x.shape[0] // 2
    x1, x2 = x[0 : 2 * m : 2], x[1 : 2 * m : 2]
    y1, y2 = y[0 : 2 * m : 2], y[1 : 2 * m : 2]

    def k(a: Tensor, b: Tensor) -> Tensor:
        return gaussian_kernels((a - b).pow(2).sum(1), base, alphas)

    return (k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1)).mean()


def _quadratic_estimate(x: Tensor, y: Tensor, base: Tensor, alphas: Sequence[float]) -> Tensor:
    n = x.shape[0]
    z = torch.cat([x, y])
    # Gram form (no [2n, 2n, d] intermediate) on features centred on their batch mean:
    # distances do not change, but ||z_i||² no longer dwarfs ||z_i − z_j||² when features
    # sit far from the origin (uncentred float32 loses 27% at mean/std = 1,000). Clamped,
    # since rounding can still go below 0.
    z = z - z.mean(0, keepdim=True)
    sq = z.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * z @ z.T).clamp_min(0.0)
    kern = gaussian_kernels(d2, base, alphas)
    kxx, kyy, kxy = kern[:n, :n], kern[n:, n:], kern[:n, n:]
    within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return within - 2.0 * kxy.mean()


def _check_features(x: Tensor, y: Tensor, *, equal: bool) -> None:
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise DabenchError(
            f"MMD takes feature matrices [n, d] of one width, got {list(x.shape)} and "
            f"{list(y.shape)}"
        )
    if equal and x.shape[0] != y.shape[0]:
        raise DabenchError(
            f"MK-MMD needs equal source and target batch sizes, got {x.shape[0]} and {y.shape[0]}"
        )
    least = 2 if equal else 1
    if x.shape[0] < least or y.shape[0] < least:
        raise DabenchError(
            f"MMD needs at least {least} sample(s) per domain, got {x.shape[0]} and {y.shape[0]}"
        )


def _at_least_fp32(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _full_precision(x: Tensor) -> torch.autocast:
    # Kernel exponents and mean differences of nearly equal features lose everything in
    # bf16/fp16, so the losses run in float32 even inside the trainer's autocast.
    return torch.autocast(x.device.type, enabled=False)
