"""MaS geodesic weight map (bench/losses/geodesic.py): distances, weights, seeding, batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from bench.errors import DabenchError
from bench.losses.geodesic import (
    CODE_DEFAULT_PARAMS,
    MAS_PARAMS,
    centroid_seed,
    distance_from_mask,
    geodesic_distance,
    geodesic_weights,
    geodesic_weights_batch,
)

# Fast marching from a point source over-estimates the Euclidean distance near the source
# (first-order start); measured worst case 0.33 px on discs and squares of 20–44 px, with the
# same value for every size, and never an under-estimate.
FMM_TOL_PX = 0.5
# MaS parameters (2, 1, 3, 20, 0): foreground [22, 21 + e²], background [22, 25].
FG_MIN, FG_MAX = 22.0, 21.0 + math.exp(2.0)
BG_MIN, BG_MAX = 22.0, 25.0


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[:n, :n]


def _disc(n: int, radius: float, centre: tuple[int, int] | None = None) -> np.ndarray:
    yy, xx = _grid(n)
    cy, cx = centre if centre is not None else (n // 2, n // 2)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def _square(n: int, half: int) -> np.ndarray:
    yy, xx = _grid(n)
    c = n // 2
    return (abs(yy - c) <= half) & (abs(xx - c) <= half)


def _u_shape() -> np.ndarray:
    """Arms at columns 10–19 and 44–53 (rows 8–55), joined by a base at rows 46–55."""
    m = np.zeros((64, 64), bool)
    m[8:56, 10:20] = True
    m[8:56, 44:54] = True
    m[46:56, 10:54] = True
    return m


def _c_shape() -> np.ndarray:
    """An annulus open to the right: its centroid lies in the (background) hole."""
    n = 64
    yy, xx = _grid(n)
    r2 = (yy - 32) ** 2 + (xx - 32) ** 2
    m = (r2 <= 24**2) & (r2 >= 14**2)
    m[24:41, 32:] = False
    return m


@pytest.mark.parametrize(
    "mask", [_disc(96, 44), _disc(64, 20), _square(96, 40)], ids=["disc44", "disc20", "square40"]
)
def test_geodesic_equals_euclidean_in_convex_mask(mask: np.ndarray) -> None:
    seed = centroid_seed(mask)
    assert seed == (mask.shape[0] // 2, mask.shape[1] // 2)
    g = geodesic_distance(mask, seed)
    yy, xx = _grid(mask.shape[0])
    euclid = np.hypot(yy - seed[0], xx - seed[1])
    assert g[seed] == 0.0
    assert np.abs(g - euclid)[mask].max() <= FMM_TOL_PX
    assert (g[mask] >= euclid[mask] - 1e-9).all()  # no path is shorter than the straight line
    assert np.isnan(g[~mask]).all()  # the domain is the mask alone


def test_geodesic_goes_around_the_gap_of_a_u() -> None:
    m = _u_shape()
    a, b = (10, 15), (10, 48)  # the tops of the two arms
    g = geodesic_distance(m, a)
    euclid = 33.0
    # Shortest path through the base, via the inner corners near (45.5, 19.5) and (45.5, 43.5).
    path = 2 * math.hypot(35.5, 4.5) + 24.0
    assert g[b] >= path - 1.0
    assert g[b] - euclid >= (path - euclid) - 1.0
    assert g[b] <= path * 1.05  # and not some unrelated large number
    # Along one arm, where the straight line stays inside, the two agree.
    assert abs(g[40, 15] - 30.0) <= FMM_TOL_PX


def test_unreachable_foreground_is_infinite_and_weighted_as_farthest() -> None:
    m = _disc(64, 14, (30, 28))
    m[2:6, 55:60] = True  # a detached part, no 4-connected path to the body
    g = geodesic_distance(m, centroid_seed(m))
    assert np.isinf(g[2:6, 55:60]).all()
    assert np.isfinite(g[_disc(64, 14, (30, 28))]).all()
    w = geodesic_weights(m)
    np.testing.assert_allclose(w[2:6, 55:60], FG_MAX, rtol=1e-6)


def test_distance_from_mask_is_euclidean_and_zero_on_mask() -> None:
    m = _u_shape()[::2, ::2]  # 32×32, keeps the brute force cheap
    h = distance_from_mask(m)
    assert (h[m] == 0).all()
    np.testing.assert_allclose(h, ndimage.distance_transform_edt(~m), atol=1e-9)
    # Independent check: brute-force nearest mask pixel for every pixel.
    fy, fx = np.nonzero(m)
    yy, xx = _grid(32)
    brute = np.hypot(yy[..., None] - fy, xx[..., None] - fx).min(-1)
    np.testing.assert_allclose(h, brute, atol=1e-9)
    assert np.isinf(distance_from_mask(np.zeros((8, 8), bool))).all()


def test_weights_ranges_seed_and_extremities_with_mas_params() -> None:
    m = _u_shape()
    w = geodesic_weights(m)
    assert w.dtype == np.float32 and w.shape == m.shape
    assert FG_MIN - 1e-5 <= w[m].min() and w[m].max() <= FG_MAX + 1e-5
    assert BG_MIN - 1e-5 <= w[~m].min() and w[~m].max() <= BG_MAX + 1e-5
    seed = centroid_seed(m)
    assert w[seed] == pytest.approx(math.exp(0) + 1.0 + 0.0 + 20.0)  # = 22 exactly
    g = geodesic_distance(m, seed)
    farthest = np.unravel_index(np.nanargmax(g), g.shape)
    assert w[farthest] == pytest.approx(FG_MAX)
    assert w[farthest] == w[m].max()
    # Background: 22 + 3·h/max h, so 25 exactly at the pixel farthest from the mask.
    h = distance_from_mask(m)
    np.testing.assert_allclose(w[~m], 22.0 + 3.0 * h[~m] / h.max(), rtol=1e-6)
    # Foreground rises monotonically with geodesic distance from the seed.
    np.testing.assert_allclose(w[m], 21.0 + np.exp(2.0 * g[m] / g[m].max()), rtol=1e-6)


def test_weights_with_the_authors_code_default_params() -> None:
    m = _u_shape()
    w = geodesic_weights(m, CODE_DEFAULT_PARAMS)
    assert w[m].min() == pytest.approx(3.0) and w[m].max() == pytest.approx(2.0 + math.exp(2))
    assert w[~m].max() == pytest.approx(5.0) and w[~m].min() >= 3.0


def test_c_shape_seeds_at_nearest_foreground_pixel_not_ones() -> None:
    m = _c_shape()
    rows, cols = np.nonzero(m)
    centroid = (rows.mean(), cols.mean())
    assert not m[int(centroid[0]), int(centroid[1])]  # the authors' code would return ones
    seed = centroid_seed(m)
    assert m[seed]
    d2 = (rows - centroid[0]) ** 2 + (cols - centroid[1]) ** 2
    assert (seed[0] - centroid[0]) ** 2 + (seed[1] - centroid[1]) ** 2 == pytest.approx(d2.min())
    w = geodesic_weights(m)
    assert w[seed] == pytest.approx(22.0)
    assert w.min() >= FG_MIN - 1e-5 and w[m].max() == pytest.approx(FG_MAX)
    assert not np.allclose(w, 1.0)


def test_empty_mask_gives_uniform_background_weight() -> None:
    for empty in (np.zeros((32, 40), np.uint8), np.zeros((32, 40), np.float32)):
        w = geodesic_weights(empty)
        assert w.shape == (32, 40) and w.dtype == np.float32
        assert (w == 22.0).all()  # exp(0) + b + d, the weight of a pixel on a silhouette
    assert (geodesic_weights(np.zeros((8, 8), bool), CODE_DEFAULT_PARAMS) == 3.0).all()
    with pytest.raises(DabenchError, match="no foreground"):
        centroid_seed(np.zeros((8, 8), bool))


def test_degenerate_masks_stay_finite() -> None:
    one = np.zeros((16, 16), bool)
    one[5, 7] = True
    w = geodesic_weights(one)
    assert np.isfinite(w).all() and w[5, 7] == pytest.approx(22.0)
    full = geodesic_weights(np.ones((16, 16), np.uint8))
    assert np.isfinite(full).all() and full.min() == pytest.approx(22.0)


def test_soft_and_uint8_masks_binarise_at_half() -> None:
    n, r = 64, 20.3
    yy, xx = _grid(n)
    soft = np.clip(r - np.hypot(yy - 31, xx - 33) + 0.5, 0.0, 1.0)  # anti-aliased edge
    assert np.abs(soft - 0.5).min() > 0.01  # no pixel sits on the threshold
    binary = soft >= 0.5
    expected = geodesic_weights(binary)
    np.testing.assert_array_equal(geodesic_weights(soft.astype(np.float32)), expected)
    np.testing.assert_array_equal(geodesic_weights(binary.astype(np.uint8) * 255), expected)
    np.testing.assert_array_equal(geodesic_weights(binary.astype(np.uint8)), expected)
    soft255 = np.round(soft * 255).astype(np.uint8)
    np.testing.assert_array_equal(geodesic_weights(soft255), expected)


def test_batch_with_two_workers_equals_one_and_single_calls() -> None:
    masks = np.stack(
        [
            _disc(32, 10).astype(np.uint8) * 255,
            _c_shape()[::2, ::2].astype(np.uint8) * 255,
            np.zeros((32, 32), np.uint8),
            _u_shape()[::2, ::2].astype(np.uint8) * 255,
            _square(32, 7).astype(np.uint8) * 255,
        ]
        * 2
    )
    one = geodesic_weights_batch(masks, workers=1, progress=True)
    two = geodesic_weights_batch(masks, workers=2, progress=True)
    assert one.dtype == np.float32 and one.shape == masks.shape
    np.testing.assert_array_equal(one, two)
    for m, w in zip(masks, one, strict=True):
        np.testing.assert_array_equal(geodesic_weights(m), w)
    empty = geodesic_weights_batch(np.zeros((0, 8, 8), np.uint8), workers=2)
    assert empty.shape == (0, 8, 8) and empty.dtype == np.float32


_GOOD = _disc(16, 5)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: geodesic_weights(np.zeros(16)), r"\[H, W\]"),
        (lambda: geodesic_weights(np.zeros((2, 16, 16))), r"\[H, W\]"),
        (lambda: geodesic_weights(np.full((8, 8), np.nan)), "non-finite"),
        (lambda: geodesic_weights(np.where(_GOOD, np.inf, 0.0)), "non-finite"),
        (lambda: geodesic_weights(_GOOD * 255.0), r"\[0, 1\]"),
        (lambda: geodesic_weights(_GOOD.astype(np.int16) * -1), "0–255"),
        (lambda: geodesic_weights(np.zeros((0, 8))), "empty mask shape"),
        (lambda: geodesic_weights(_GOOD, (2.0, 1.0, 3.0, 20.0)), "5 numbers"),
        (lambda: geodesic_weights(_GOOD, (-2.0, 1.0, 3.0, 20.0, 0.0)), "a and c"),
        (lambda: geodesic_weights(_GOOD, (2.0, 1.0, -3.0, 20.0, 0.0)), "a and c"),
        (lambda: geodesic_weights(_GOOD, (2.0, 1.0, 3.0, math.nan, 0.0)), "finite"),
        (lambda: geodesic_weights(_GOOD, "abcde"), "5 numbers"),
        (lambda: geodesic_weights_batch(_GOOD), r"\[N, H, W\]"),
        (lambda: geodesic_weights_batch(_GOOD[None], workers=0), "workers"),
        (lambda: geodesic_weights_batch(np.full((1, 8, 8), np.nan)), "non-finite"),
        (lambda: geodesic_distance(_GOOD, (0, 0)), "not a foreground"),
        (lambda: geodesic_distance(_GOOD, (99, 0)), "outside"),
    ],
)
def test_bad_input_raises_dabench_error(call, match: str) -> None:
    with pytest.raises(DabenchError, match=match):
        call()


def test_mas_params_are_the_papers() -> None:
    assert MAS_PARAMS == (2.0, 1.0, 3.0, 20.0, 0.0)
