"""Calibrated multi-view rigs and per-frame crops.

Every scene has a static rig of V cameras around the subject; every stored image is a
square crop around the subject in one view, and its intrinsics are those of the crop
(as converters of real datasets store them), so ``kp2d`` is the exact projection of
``kp3d`` through the stored ``K``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.data.geometry import look_at, rot_z
from bench.errors import DabenchError


@dataclass(frozen=True)
class RigSpec:
    """Where cameras stand relative to the subject (degrees, mm).

    ``axis``/``front``/``up`` are unit vectors of the subject's base frame: cameras are
    spread in azimuth around ``axis`` starting from ``front``; elevation tilts them
    towards ``axis``; ``up`` appears upwards in the image before the random roll.
    """

    distance: tuple[float, float]
    elevation: tuple[float, float]
    azimuth_spread: float
    roll: float
    crop_scale: tuple[float, float]
    crop_jitter: float
    axis: tuple[float, float, float]
    front: tuple[float, float, float]
    up: tuple[float, float, float]
    target: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # Where the arc of views is centred (degrees from ``front``): uniform over the circle
    # when empty, else one of these ± ``azimuth_jitter``.
    azimuth_centers: tuple[float, ...] = ()
    azimuth_jitter: float = 0.0

    def with_overrides(self, overrides: Mapping[str, Any] | None, where: str) -> RigSpec:
        if not overrides:
            return self
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise DabenchError(
                f"{where}: unknown camera key(s) {unknown}; valid keys: {sorted(valid)}"
            )
        fixed = {
            k: tuple(float(x) for x in v) if isinstance(v, list | tuple) else float(v)
            for k, v in overrides.items()
        }
        return dataclasses.replace(self, **fixed)


def sample_rigs(spec: RigSpec, rng: np.random.Generator, num_scenes: int, num_views: int):
    """World→camera rotations and translations [S, V, 3, 3], [S, V, 3] (mm)."""
    axis, front, up = (np.asarray(v, dtype=np.float64) for v in (spec.axis, spec.front, spec.up))
    side = np.cross(axis, front)
    # Views spread evenly over the arc around a random centre, with a little jitter.
    spread = np.deg2rad(spec.azimuth_spread)
    if spec.azimuth_centers:
        choice = rng.integers(0, len(spec.azimuth_centers), (num_scenes, 1))
        centre = np.deg2rad(
            np.asarray(spec.azimuth_centers)[choice]
            + rng.uniform(-spec.azimuth_jitter, spec.azimuth_jitter, (num_scenes, 1))
        )
    else:
        centre = rng.uniform(-np.pi, np.pi, (num_scenes, 1))
    slots = (np.arange(num_views)[None, :] + 0.5) / num_views - 0.5
    noise = rng.normal(0, 0.15 * spread / num_views, (num_scenes, num_views))
    az = centre + spread * slots + noise
    el = np.deg2rad(rng.uniform(*spec.elevation, (num_scenes, num_views)))
    dist = rng.uniform(*spec.distance, (num_scenes, num_views))
    dirs = (
        np.cos(el)[..., None] * (np.cos(az)[..., None] * front + np.sin(az)[..., None] * side)
        + np.sin(el)[..., None] * axis
    )
    target = np.asarray(spec.target)
    eye = target + dist[..., None] * dirs
    rot, _ = look_at(eye, np.broadcast_to(target, eye.shape), np.broadcast_to(up, eye.shape))
    roll = np.deg2rad(rng.uniform(-spec.roll, spec.roll, (num_scenes, num_views)))
    rot = rot_z(roll) @ rot
    trans = -np.einsum("svij,svj->svi", rot, eye)
    return rot, trans


def crop_intrinsics(
    points: np.ndarray, size: int, scale: np.ndarray, jitter: np.ndarray
) -> np.ndarray:
    """Intrinsics [N, 3, 3] of square crops around camera-frame points [N, J, 3].

    The crop side is ``scale`` × the larger side of the points' bounding box (in
    normalised image coordinates), its centre moved by ``jitter`` [N, 2] × side, as a
    detector-based crop would; pixel centres sit at integer coordinates.
    """
    uv = points[..., :2] / points[..., 2:3]
    lo, hi = uv.min(axis=1), uv.max(axis=1)
    side = (hi - lo).max(axis=1) * scale
    centre = (lo + hi) / 2 + jitter * side[:, None]
    f = size / side
    k = np.zeros((points.shape[0], 3, 3))
    k[:, 0, 0] = k[:, 1, 1] = f
    k[:, :2, 2] = -(centre - side[:, None] / 2) * f[:, None] - 0.5
    k[:, 2, 2] = 1.0
    return k
