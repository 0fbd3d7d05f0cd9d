"""Appearance styles: the domains of the synthetic benchmark.

A style decides everything about pixels and nothing about poses: backgrounds, subject
colours, lighting, sensor noise, blur, colour shift, occluders and the label convention.
Each style draws from its own random stream (``rng_key``), so two styles with the same
key and seed produce the same images (``annotation-shift`` re-labels ``wild``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter, zoom

from bench.errors import DabenchError

SKIN_TONES = np.array(
    [
        [0.96, 0.80, 0.69],
        [0.92, 0.74, 0.60],
        [0.84, 0.63, 0.48],
        [0.72, 0.52, 0.38],
        [0.56, 0.39, 0.27],
        [0.40, 0.27, 0.19],
    ]
)


@dataclass(frozen=True)
class Style:
    """Parameters of one appearance domain. Ranges are (low, high) drawn uniformly."""

    name: str
    rng_key: str
    background: str = "flat"  # "flat" | "clutter"
    background_gray: tuple[float, float] = (0.35, 0.75)
    skin_tones: tuple[int, int] = (0, 2)  # index range into SKIN_TONES (inclusive)
    clothing: str = "palette"  # "palette" | "random"
    lighting: str = "headlight"  # "headlight" | "directional"
    ambient: tuple[float, float] = (0.45, 0.45)
    noise_std: tuple[float, float] = (0.0, 0.0)  # in 0..255 intensity units
    blur_sigma: tuple[float, float] = (0.0, 0.0)  # px at 64×64, scaled with image size
    distractors: tuple[int, int] = (0, 0)  # limb-like skin-coloured capsules in the background
    clutter_shapes: tuple[int, int] = (0, 0)
    color_shift: bool = False
    hue_shift_deg: tuple[float, float] = (0.0, 0.0)
    contrast: tuple[float, float] = (1.0, 1.0)
    brightness: tuple[float, float] = (0.0, 0.0)
    occluders: tuple[int, int] = (0, 0)
    occluder_size: tuple[float, float] = (0.15, 0.35)  # fraction of the image side
    label_shift: bool = False

    def with_overrides(self, overrides: Mapping[str, Any] | None, where: str) -> Style:
        """A copy with card overrides applied; unknown keys are errors listing valid keys."""
        if not overrides:
            return self
        valid = {f.name for f in dataclasses.fields(self)} - {"name", "rng_key"}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise DabenchError(
                f"{where}: unknown appearance key(s) {unknown}; valid keys: {sorted(valid)}"
            )
        fixed = {}
        for key, value in overrides.items():
            current = getattr(self, key)
            if isinstance(current, tuple):
                if not isinstance(value, list | tuple) or len(value) != len(current):
                    raise DabenchError(
                        f"{where}: appearance key {key!r} needs a [low, high] pair, got {value!r}"
                    )
                value = tuple(type(c)(v) for c, v in zip(current, value, strict=True))
            elif not isinstance(value, type(current)):
                raise DabenchError(
                    f"{where}: appearance key {key!r} must be {type(current).__name__}, "
                    f"got {value!r}"
                )
            fixed[key] = value
        return dataclasses.replace(self, **fixed)


_WILD = dict(
    background="clutter",
    skin_tones=(0, 5),
    clothing="random",
    lighting="directional",
    ambient=(0.45, 0.7),
    noise_std=(1.0, 5.0),
    blur_sigma=(0.0, 0.4),
    distractors=(0, 1),
    clutter_shapes=(2, 6),
)

STYLES: dict[str, Style] = {
    "clean": Style("clean", "clean"),
    "wild": Style("wild", "wild", **_WILD),
    "annotation-shift": Style("annotation-shift", "wild", label_shift=True, **_WILD),
    "style": Style(
        "style",
        "style",
        color_shift=True,
        hue_shift_deg=(80.0, 140.0),
        contrast=(0.45, 0.7),
        brightness=(0.05, 0.2),
    ),
    "occluded": Style("occluded", "occluded", occluders=(1, 3)),
}


def get_style(name: str) -> Style:
    if name not in STYLES:
        raise DabenchError(f"unknown appearance style {name!r}; valid styles: {sorted(STYLES)}")
    return STYLES[name]


def _hsv_colors(rng: np.random.Generator, n: int, sat=(0.2, 0.9), val=(0.2, 0.95)) -> np.ndarray:
    h = rng.uniform(0, 1, n)
    s = rng.uniform(*sat, n)
    v = rng.uniform(*val, n)
    k = (np.array([5.0, 3.0, 1.0])[None, :] + 6.0 * h[:, None]) % 6.0
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


_PALETTE = np.array(
    [
        [0.20, 0.30, 0.60],
        [0.55, 0.15, 0.15],
        [0.25, 0.45, 0.25],
        [0.45, 0.45, 0.50],
        [0.15, 0.15, 0.18],
        [0.60, 0.50, 0.30],
    ]
)


def subject_colors(style: Style, rng: np.random.Generator, slots: tuple[str, ...], n: int):
    """Colours [n, len(slots), 3] for n subjects: skin-derived slots are physically
    related (palm lighter and pinker than the back of the hand) so the cue is stable
    across skin tones."""
    lo, hi = style.skin_tones
    skin = SKIN_TONES[rng.integers(lo, hi + 1, n)] * rng.uniform(0.93, 1.05, (n, 1))
    if style.clothing == "palette":
        cloth = _PALETTE[rng.integers(0, len(_PALETTE), (n, 3))]
    else:
        cloth = _hsv_colors(rng, 3 * n).reshape(n, 3, 3)
    table = {
        "skin": skin,
        "palm": np.clip(skin * np.array([1.1, 1.0, 1.0]) + 0.06, 0, 1),
        "back": skin * 0.78,
        "nail": np.clip(0.55 * skin + 0.45 * np.array([0.98, 0.9, 0.92]), 0, 1),
        "sleeve": cloth[:, 0],
        "shirt": cloth[:, 0],
        "shirt_back": cloth[:, 0] * 0.6,
        "pants": cloth[:, 1],
        "shoe": cloth[:, 2] * 0.5,
        "hair": np.stack([rng.uniform(0.05, 0.35, n)] * 3, 1) * np.array([1.0, 0.8, 0.6]),
        "eye": np.full((n, 3), 0.08),
    }
    return np.stack([table[s] for s in slots], axis=1).astype(np.float32)


def lighting(style: Style, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit light directions (towards the light, camera frame) [n, 3] and ambient [n]."""
    if style.lighting == "headlight":
        light = np.tile(np.array([0.0, -0.25, -1.0]), (n, 1))
    else:
        light = np.stack(
            [rng.uniform(-1, 1, n), rng.uniform(-1, 0.4, n), -rng.uniform(0.15, 1.0, n)], 1
        )
    light /= np.linalg.norm(light, axis=1, keepdims=True)
    return light.astype(np.float32), rng.uniform(*style.ambient, n).astype(np.float32)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return xs, ys


TEXTURE_SIZE = 64


def backgrounds(style: Style, rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Background images [n, size, size, 3] float32 in [0, 1].

    Clutter is drawn at no more than 64 px and enlarged smoothly: at larger sizes the
    background is then slightly out of focus, as behind a subject a real camera focuses on.
    """
    if style.background != "flat" and size > TEXTURE_SIZE:
        small = backgrounds(style, rng, n, TEXTURE_SIZE)
        return zoom(
            small,
            (1, size / TEXTURE_SIZE, size / TEXTURE_SIZE, 1),
            order=1,
            mode="nearest",
            grid_mode=True,
        )

    def uni(lo, hi, shape):
        return rng.uniform(lo, hi, shape).astype(np.float32)

    def colors(k):
        return _hsv_colors(rng, k).astype(np.float32)

    if style.background == "flat":
        gray = uni(*style.background_gray, (n, 1, 1, 1))
        tint = uni(-0.04, 0.04, (n, 1, 1, 3))
        return np.broadcast_to(gray + tint, (n, size, size, 3)).copy()
    xs, ys = _grid(size)
    # Base: a gradient between two random colours plus two coloured gratings (texture).
    c0, c1 = colors(n), colors(n)
    ang = uni(0, 2 * np.pi, (n, 1, 1))
    ramp = (np.cos(ang) * xs + np.sin(ang) * ys + 1.0) / 2.0
    img = c0[:, None, None] + (c1 - c0)[:, None, None] * ramp[..., None]
    for _ in range(2):
        ang = uni(0, np.pi, (n, 1, 1))
        freq = uni(2, 14, (n, 1, 1))
        phase = uni(0, 2 * np.pi, (n, 1, 1))
        wave = np.sin(2 * np.pi * freq * (np.cos(ang) * xs + np.sin(ang) * ys) + phase)
        amp = uni(0.04, 0.2, (n, 1, 1, 1))
        img += amp * wave[..., None] * (colors(n)[:, None, None] - 0.5)
    # Clutter: ellipses and rectangles in random colours.
    m = int(rng.integers(style.clutter_shapes[0], style.clutter_shapes[1] + 1))
    for _ in range(m):
        cx, cy = uni(-0.1, 1.1, (2, n, 1, 1))
        rx, ry = uni(0.04, 0.3, (2, n, 1, 1))
        ang = uni(0, np.pi, (n, 1, 1))
        c, s = np.cos(ang), np.sin(ang)
        u = ((xs - cx) * c + (ys - cy) * s) / rx
        v = ((ys - cy) * c - (xs - cx) * s) / ry
        ellipse = u * u + v * v < 1.0
        rect = (np.abs(u) < 1.0) & (np.abs(v) < 1.0)
        shape = np.where(uni(0, 1, (n, 1, 1)) < 0.5, ellipse, rect)
        alpha = uni(0.5, 1.0, (n, 1, 1, 1)) * shape[..., None]
        img += alpha * (colors(n)[:, None, None] - img)
    # Distractors: skin-coloured limb-like capsules, so "skin" alone does not find the subject.
    k = int(rng.integers(style.distractors[0], style.distractors[1] + 1))
    for _ in range(k):
        a = uni(-0.1, 1.1, (n, 2))
        d = rng.normal(0, 0.25, (n, 2)).astype(np.float32)
        r = uni(0.02, 0.07, (n, 1, 1))
        px, py = xs - a[:, 0, None, None], ys - a[:, 1, None, None]
        dx, dy = d[:, 0, None, None], d[:, 1, None, None]
        t = np.clip((px * dx + py * dy) / (dx * dx + dy * dy + 1e-9), 0, 1)
        dist2 = ((px - t * dx) ** 2 + (py - t * dy) ** 2) / (r * r)
        inside = (dist2 < 1.0)[..., None]
        tone = SKIN_TONES[rng.integers(0, len(SKIN_TONES), n)].astype(np.float32)[:, None, None]
        shade = np.sqrt(np.clip(1 - dist2, 0, 1))[..., None]
        img = np.where(inside, tone * (0.5 + 0.5 * shade), img)
    np.clip(img, 0.0, 1.0, out=img)
    return img


def color_shift(style: Style, rng: np.random.Generator, images: np.ndarray) -> np.ndarray:
    """Hue rotation (in YIQ), contrast and brightness change per image; geometry untouched."""
    n = images.shape[0]
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    from_yiq = np.linalg.inv(to_yiq)
    theta = np.deg2rad(rng.uniform(*style.hue_shift_deg, n))
    c, s = np.cos(theta), np.sin(theta)
    rot = np.zeros((n, 3, 3))
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    mat = (from_yiq @ rot @ to_yiq).astype(np.float32)
    out = np.einsum("nij,nhwj->nhwi", mat, images)
    contrast = rng.uniform(*style.contrast, (n, 1, 1, 1)).astype(np.float32)
    bright = rng.uniform(*style.brightness, (n, 1, 1, 1)).astype(np.float32)
    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    return np.clip((out - mean) * contrast + mean + bright, 0.0, 1.0)


def blur(images: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Gaussian blur with a per-image sigma (px); images are grouped by quantised sigma so
    scipy filters whole stacks at once."""
    levels = np.round(sigma * 4) / 4
    out = images
    for level in np.unique(levels):
        if level <= 0:
            continue
        sel = levels == level
        out[sel] = gaussian_filter(images[sel], sigma=(0, level, level, 0), mode="nearest")
    return out


def occluder_layer(
    style: Style, rng: np.random.Generator, kp2d: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random occluders over the subject: (coverage [n, S, S] bool, colour [n, S, S, 3]).

    Each occluder is centred near a random joint so that it really hides some of them.
    """
    n, num_joints = kp2d.shape[:2]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    cover = np.zeros((n, size, size), bool)
    color = np.zeros((n, size, size, 3), np.float32)
    count = rng.integers(style.occluders[0], style.occluders[1] + 1, n)
    for i in range(int(style.occluders[1])):
        j = rng.integers(0, num_joints, n)
        centre = (kp2d[np.arange(n), j] + rng.normal(0, 0.05 * size, (n, 2))).astype(np.float32)
        rx, ry = (rng.uniform(*style.occluder_size, (2, n, 1, 1)) * size / 2).astype(np.float32)
        ang = rng.uniform(0, np.pi, (n, 1, 1)).astype(np.float32)
        is_ellipse = rng.uniform(size=n) < 0.5
        base = _hsv_colors(rng, n).astype(np.float32)
        freq = rng.uniform(0.3, 1.2, (n, 1, 1)).astype(np.float32)
        rows = np.flatnonzero(count > i)
        if rows.size == 0:
            continue
        c, s = np.cos(ang[rows]), np.sin(ang[rows])
        dx = xs - centre[rows, 0, None, None]
        dy = ys - centre[rows, 1, None, None]
        u, v = dx * c + dy * s, dy * c - dx * s
        ur, vr = u / rx[rows], v / ry[rows]
        ellipse = ur * ur + vr * vr < 1.0
        rect = (np.abs(ur) < 1.0) & (np.abs(vr) < 1.0)
        shape = np.where(is_ellipse[rows, None, None], ellipse, rect)
        stripes = 0.85 + 0.15 * np.sign(np.sin(u * freq[rows]))
        fill = base[rows, None, None, :] * stripes[..., None]
        sub = color[rows]
        sub[shape] = fill[shape]
        color[rows] = sub
        cover[rows] |= shape
    return cover, color
