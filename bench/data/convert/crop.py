"""The papers' crop: a square around the subject, resized to the card's size, with the
intrinsics carried along so that ``kp2d`` stays the projection of ``kp3d``.

Pixel centres are at integer coordinates (the shard convention). A crop takes the whole
source pixels ``x0 … x0 + side − 1`` (continuous extent ``[x0 − 0.5, x0 + side − 0.5)``),
so a point maps as ``u' = (u − x0 + 0.5) · s − 0.5`` with ``s = size / side``: the affine
``A`` below, applied to keypoints and to ``K`` alike (``K' = A K``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from bench.errors import DabenchError

# The subject's box is enlarged by this factor before squaring (joints sit on the body's
# outline; the papers' crops keep a margin around them).
MARGIN = 1.25


def in_image(uv: np.ndarray, width: int, height: int) -> np.ndarray:
    """Whether pixels ``uv [..., 2]`` fall inside a ``width`` × ``height`` image, whose
    continuous extent is ``[-0.5, W - 0.5) × [-0.5, H - 0.5)`` with centres at integers."""
    with np.errstate(invalid="ignore"):  # NaN joints are outside
        return (uv >= -0.5).all(axis=-1) & (uv[..., 0] < width - 0.5) & (uv[..., 1] < height - 0.5)


@dataclass(frozen=True)
class SquareCrop:
    """An integer square ``x0, y0, side`` (source pixels) resized to ``size``."""

    x0: int
    y0: int
    side: int
    size: int

    @property
    def affine(self) -> np.ndarray:
        """3×3: source pixel coordinates → crop pixel coordinates."""
        s = self.size / self.side
        return np.array(
            [
                [s, 0.0, (0.5 - self.x0) * s - 0.5],
                [0.0, s, (0.5 - self.y0) * s - 0.5],
                [0.0, 0.0, 1.0],
            ]
        )

    def points(self, uv: np.ndarray) -> np.ndarray:
        """``[..., 2]`` source px → crop px (NaN stays NaN)."""
        a = self.affine
        return uv @ a[:2, :2].T + a[:2, 2]

    def intrinsics(self, k: np.ndarray) -> np.ndarray:
        return self.affine @ k

    def lengths(self, value: np.ndarray | float) -> np.ndarray | float:
        """A length in source px (a head size) in crop px."""
        return value * (self.size / self.side)

    def image(self, image: np.ndarray, resample: int = Image.Resampling.BILINEAR) -> np.ndarray:
        """``[H, W, 3]`` or ``[H, W]`` uint8 → the crop at ``size``; outside the image is 0."""
        pil = Image.fromarray(image)
        box = (self.x0, self.y0, self.x0 + self.side, self.y0 + self.side)
        return np.asarray(pil.crop(box).resize((self.size, self.size), resample=resample))


def square_around(
    uv: np.ndarray, valid: np.ndarray, size: int, margin: float = MARGIN
) -> SquareCrop:
    """The square around the valid points ``uv [K, 2]`` (or a mask's corners), enlarged by
    ``margin``, centred on their box; the side is at least one pixel."""
    pts = np.asarray(uv, dtype=np.float64)[np.asarray(valid, dtype=bool)]
    pts = pts[np.isfinite(pts).all(axis=1)]
    if not len(pts):
        raise DabenchError("cannot crop a sample without a single valid keypoint or mask pixel")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre = (lo + hi) / 2
    side = max(1, int(np.ceil(max(hi - lo) * margin)))
    x0, y0 = (int(np.floor(c - side / 2 + 0.5)) for c in centre)
    return SquareCrop(x0, y0, side, size)


def mask_points(mask: np.ndarray) -> np.ndarray:
    """The two corners of a mask's bounding box as points ``[2, 2]`` (x, y)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        raise DabenchError("the sample's mask is empty: no box to crop around")
    return np.array([[xs.min(), ys.min()], [xs.max(), ys.max()]], dtype=np.float64)


def centre_square(shape: tuple[int, int], size: int) -> SquareCrop:
    """The largest square centred in an image of ``shape`` (H, W)."""
    h, w = shape
    side = min(h, w)
    return SquareCrop((w - side) // 2, (h - side) // 2, side, size)
