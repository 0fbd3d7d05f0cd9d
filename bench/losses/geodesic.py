"""Geodesic weighting map G of "Mask as Supervision" (MaS, ECCV 2024), its Eq. 9.

MaS supervises a predicted silhouette with a ground-truth mask; G weights the per-pixel squared
residuals of those mask losses so that errors far from the body's core (hands, feet: the thin
extremities a pose depends on) and far from the silhouette (spurious blobs) cost more than errors
near the torso. The integrator multiplies it in *linearly*,
``loss = mean(G · (M_pred − M_gt)²)``, as the authors' code does (the paper's ‖G ⊙ (·)‖² would
square it); here G is simply a non-negative weight map, one per mask, computed once per training
image as a stage artifact.

Construction, for a mask M [H, W] with foreground F and parameters (a, b, c, d, e):

* g — on F, the geodesic distance *inside* F from a seed pixel (fast marching, scikit-fmm,
  dx = 1, second order), so that distance follows the body: a hand raised beside the head is
  far from the torso even when it is close in the image plane. ĝ = g / max g ∈ [0, 1] on F,
  ĝ = 0 off F.
* h — off F, the Euclidean distance to F (exact, ``scipy.ndimage.distance_transform_edt``);
  h = e on F. ĥ = h / max h.
* G = [exp(a·ĝ) + b] + [c·ĥ + d], the two terms added at *every* pixel, as in the authors' code.
  With the MaS configuration (2, 1, 3, 20, 0): foreground G = 22 + (exp(2ĝ) − 1) ∈ [22, 28.39],
  rising from the seed (22) to the geodesically farthest pixel (21 + exp(2) ≈ 28.39); background
  G = 22 + 3ĥ ∈ [22, 25], rising with the distance from the silhouette. (The authors' default
  without a configuration is (2, 1, 2, 1, 0): foreground [3, 9.39], background [3, 5].)

Choices that differ from, or go beyond, the authors' code (X-as-Supervision,
``human_utils/common/utility/geodesic.py``), each for a reason:

* **Seed.** The seed is the integer centroid (mean column, mean row of F, truncated), as
  theirs. When that pixel is *not* foreground (a C-shaped or two-part silhouette, a person
  bent over) their code returns a map of ones for the whole sample — a ~22× down-weighting of
  exactly the poses that are hard. Here the seed moves to the foreground pixel nearest to the
  real-valued centroid (ties: first in row-major order), which keeps the map's meaning
  ("distance from the body's centre, along the body").
* **Unreachable foreground.** Foreground pixels with no 4-connected path to the seed (a hand
  separated from the body by an occluder) come back masked from scikit-fmm; theirs turns them
  into distance 0, i.e. the *lowest* weight, as if they were the torso. Here they get ĝ = 1,
  the weight of the farthest extremity: a detached part is at least as far, along the body,
  as anything reachable.
* **Empty mask.** A mask with no foreground is legitimate data (subject out of frame, fully
  occluded); theirs would seed at a NaN centroid. Here the map is uniform at the background
  weight of a pixel on the silhouette, exp(0) + b + d (22 with the MaS parameters): no pixel
  is emphasised, and the sample keeps the same scale as every other sample.
* **Degenerate normalisers.** A one-pixel mask (max g = 0) or a mask covering the image
  (max h = 0) gives ĝ = 0 or ĥ = 0 instead of 0/0 = NaN.
* **Background distance.** Theirs runs fast marching from the mask's zero level set; here the
  exact Euclidean distance transform is used (same quantity without the fast-marching error,
  and faster). ``e`` is the value h takes on mask pixels (0 in every configuration we know;
  in their code it is the level-set value there, which only coincides for e = 0).
* **Binarisation.** Masks arrive as uint8 0/255, bool, integer 0/1, or float in [0, 1] with soft
  edges after a bilinear warp. Everything is binarised at half scale: floats at ≥ 0.5, integer
  masks at ≥ 128 when their maximum exceeds 1 (0–255 scale) and at ≥ 1 otherwise (0/1 masks).
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from bench.errors import DabenchError

# (a, b, c, d, e) of the MaS configuration: foreground weights [22, 28.39], background [22, 25].
MAS_PARAMS: tuple[float, float, float, float, float] = (2.0, 1.0, 3.0, 20.0, 0.0)
# The authors' code default when no configuration is given: foreground [3, 9.39], background [3, 5].
CODE_DEFAULT_PARAMS: tuple[float, float, float, float, float] = (2.0, 1.0, 2.0, 1.0, 0.0)

# Masks per task sent to a worker process: large enough that pickling and scheduling are
# negligible next to fast marching, small enough that the progress bar moves.
_MAX_CHUNK = 256
# Float masks may overshoot [0, 1] by interpolation round-off; beyond this it is a wrong scale.
_FLOAT_SLACK = 1e-3


def geodesic_distance(mask: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """In-mask geodesic distance from ``seed`` = (row, col), by fast marching (dx = 1, order 2).

    Returns float64 [H, W]: 0 at the seed, the arc length of the shortest 4-connected path
    inside the foreground elsewhere on it; ``inf`` on foreground pixels with no path to the seed
    (the distance is infinite, not unknown); ``NaN`` on background, where the quantity is not
    defined (the domain of the eikonal equation is the foreground alone). The mask is binarised
    as described in the module docstring; the seed must be a foreground pixel.
    """
    fg = _binarise(_check_mask(mask))
    return _geodesic(fg, _check_seed(fg, seed))


def distance_from_mask(mask: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance (pixels) from every pixel to the nearest foreground pixel.

    Returns float64 [H, W], 0 on the mask (every mask pixel is a source). With no foreground
    at all the distance to the empty set is ``inf`` everywhere.
    """
    return _distance_from(_binarise(_check_mask(mask)))


def centroid_seed(mask: np.ndarray) -> tuple[int, int]:
    """The fast-marching seed (row, col) of a mask: its truncated integer centroid when that
    pixel is foreground, else the foreground pixel nearest to the real-valued centroid.

    The authors' code gives up (a map of ones) when the centroid is background; moving the
    seed keeps such samples weighted like the rest. Raises DabenchError for an empty mask.
    """
    fg = _binarise(_check_mask(mask))
    if not fg.any():
        raise DabenchError("centroid_seed: the mask has no foreground pixel to seed from")
    return _seed(fg)


def geodesic_weights(mask: np.ndarray, params: Sequence[float] = MAS_PARAMS) -> np.ndarray:
    """MaS's geodesic weight map G (float32 [H, W]) of one mask [H, W]; see the module docstring.

    ``params`` = (a, b, c, d, e): foreground term exp(a·ĝ) + b, background term c·ĥ + d, added
    everywhere; e is the background distance on mask pixels. An empty mask gives the uniform
    map exp(0) + b + d.
    """
    a, b, c, d, e = _check_params(params)
    return _weights(_binarise(_check_mask(mask)), a, b, c, d, e)


def geodesic_weights_batch(
    masks: np.ndarray,
    params: Sequence[float] = MAS_PARAMS,
    workers: int = 1,
    progress: bool = False,
    *,
    mp_context: str | None = None,
) -> np.ndarray:
    """:func:`geodesic_weights` of every mask of ``masks`` [N, H, W] → float32 [N, H, W].

    Input is checked and binarised once, up front, so a bad batch fails before any work and
    workers receive compact bool arrays. With ``workers`` > 1 chunks of masks go to a process
    pool (fast marching holds the GIL, so threads would not help); results are identical to
    ``workers=1``. ``progress`` shows a tqdm bar counting masks. ``mp_context`` names the
    multiprocessing start method (None: the platform default — ``fork`` on Linux up to Python
    3.13, which avoids re-importing torch in every worker).
    """
    a, b, c, d, e = _check_params(params)
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise DabenchError(f"geodesic weights: masks must be [N, H, W], got shape {masks.shape}")
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise DabenchError(f"geodesic weights: workers must be an integer ≥ 1, got {workers!r}")
    _check_values(masks)
    fg = np.stack([_binarise(m) for m in masks]) if len(masks) else masks.astype(bool)
    n = len(fg)
    out = np.empty(fg.shape, dtype=np.float32)
    with tqdm(total=n, desc="geodesic weights", unit="mask", disable=not progress) as bar:
        if workers == 1 or n <= 1:
            for i in range(n):
                out[i] = _weights(fg[i], a, b, c, d, e)
                bar.update(1)
            return out
        size = max(1, min(_MAX_CHUNK, math.ceil(n / (4 * workers))))
        ctx = multiprocessing.get_context(mp_context) if mp_context else None
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {
                pool.submit(_weights_chunk, fg[i : i + size], (a, b, c, d, e)): i
                for i in range(0, n, size)
            }
            for future in as_completed(futures):
                start = futures[future]
                chunk = future.result()
                out[start : start + len(chunk)] = chunk
                bar.update(len(chunk))
    return out


# --- implementation -------------------------------------------------------------------------


def _weights_chunk(fg: np.ndarray, params: tuple[float, ...]) -> np.ndarray:
    """Worker-side: weights of a chunk of already-binarised masks."""
    return np.stack([_weights(m, *params) for m in fg])


def _weights(fg: np.ndarray, a: float, b: float, c: float, d: float, e: float) -> np.ndarray:
    if not fg.any():
        return np.full(fg.shape, math.exp(0.0) + b + d, dtype=np.float32)
    g = _geodesic(fg, _seed(fg))
    reachable = np.isfinite(g)  # NaN off the mask, inf on foreground cut off from the seed
    g_max = g[reachable].max()
    g_hat = np.zeros(fg.shape)
    if g_max > 0:
        g_hat[reachable] = g[reachable] / g_max
    g_hat[np.isinf(g)] = 1.0  # detached parts count as the farthest extremity
    h = _distance_from(fg)
    h[fg] = e
    h_max = h.max()
    h_hat = h / h_max if h_max > 0 else np.zeros(fg.shape)
    weights = np.exp(a * g_hat) + b + c * h_hat + d
    return weights.astype(np.float32)


def _geodesic(fg: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    # Imported here, as the converters import their video and CDF readers: scikit-fmm ships
    # no wheel for some Pythons (3.12 on the lent GPU machines), and only MaS needs it.
    import skfmm

    phi = np.ones(fg.shape)
    phi[seed] = 0.0  # an exact zero makes the seed itself the front: distance 0 there
    marched = skfmm.distance(np.ma.MaskedArray(phi, mask=~fg), dx=1.0, order=2)
    dist = np.where(np.ma.getmaskarray(marched), np.inf, np.ma.getdata(marched)).astype(np.float64)
    dist[~fg] = np.nan
    return dist


def _distance_from(fg: np.ndarray) -> np.ndarray:
    if not fg.any():
        return np.full(fg.shape, np.inf)
    return ndimage.distance_transform_edt(~fg).astype(np.float64)


def _seed(fg: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(fg)
    r_mean, c_mean = rows.mean(), cols.mean()
    seed = (int(r_mean), int(c_mean))
    if fg[seed]:
        return seed
    nearest = int(np.argmin((rows - r_mean) ** 2 + (cols - c_mean) ** 2))
    return int(rows[nearest]), int(cols[nearest])


def _check_seed(fg: np.ndarray, seed: tuple[int, int]) -> tuple[int, int]:
    try:
        r, c = (int(v) for v in seed)
    except (TypeError, ValueError):
        raise DabenchError(f"geodesic distance: seed must be (row, col), got {seed!r}") from None
    h, w = fg.shape
    if not (0 <= r < h and 0 <= c < w):
        raise DabenchError(f"geodesic distance: seed {(r, c)} is outside the {h}×{w} mask")
    if not fg[r, c]:
        raise DabenchError(f"geodesic distance: seed {(r, c)} is not a foreground pixel")
    return r, c


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DabenchError(f"geodesic weights: a mask must be [H, W], got shape {mask.shape}")
    _check_values(mask)
    return mask


def _check_values(masks: np.ndarray) -> None:
    """Dtype and value range of one mask or a stack; empty spatial shapes are refused."""
    if masks.ndim and 0 in masks.shape[-2:]:
        raise DabenchError(f"geodesic weights: empty mask shape {masks.shape}")
    if masks.dtype == bool or masks.size == 0:
        return
    if np.issubdtype(masks.dtype, np.integer):
        lo, hi = int(masks.min()), int(masks.max())
        if lo < 0 or hi > 255:
            raise DabenchError(
                f"geodesic weights: integer masks must be 0/1 or 0–255, got values in [{lo}, {hi}]"
            )
    elif np.issubdtype(masks.dtype, np.floating):
        if not np.isfinite(masks).all():
            raise DabenchError("geodesic weights: the mask has non-finite values (NaN or inf)")
        lo, hi = float(masks.min()), float(masks.max())
        if lo < -_FLOAT_SLACK or hi > 1 + _FLOAT_SLACK:
            raise DabenchError(
                f"geodesic weights: float masks must lie in [0, 1], got values in [{lo}, {hi}]"
            )
    else:
        raise DabenchError(f"geodesic weights: unsupported mask dtype {masks.dtype}")


def _binarise(mask: np.ndarray) -> np.ndarray:
    """Foreground = at least half scale (see the module docstring)."""
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.floating):
        return mask >= 0.5
    return mask >= (128 if mask.size and mask.max() > 1 else 1)


def _check_params(params: Sequence[float]) -> tuple[float, float, float, float, float]:
    try:
        values = tuple(float(p) for p in params)
    except (TypeError, ValueError):
        raise DabenchError(
            f"geodesic weights: params must be 5 numbers (a, b, c, d, e), got {params!r}"
        ) from None
    if len(values) != 5:
        raise DabenchError(
            f"geodesic weights: params must be 5 numbers (a, b, c, d, e), got {len(values)}"
        )
    if not all(math.isfinite(v) for v in values):
        raise DabenchError(f"geodesic weights: params must be finite, got {values}")
    a, b, c, d, e = values
    if a < 0 or c < 0:
        raise DabenchError(
            "geodesic weights: a and c must be ≥ 0 (a negative one would weight the torso "
            f"above the extremities, or the silhouette above far pixels), got a={a}, c={c}"
        )
    return a, b, c, d, e
