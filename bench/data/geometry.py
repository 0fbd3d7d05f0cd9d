"""Camera and rotation geometry shared by the data layer, the models and the methods.

Conventions (everywhere in dabench): camera frame x right, y down, z forward (OpenCV);
pixel centres at integer coordinates, so a W-pixel image spans x in [-0.5, W - 0.5);
world→camera is ``X_cam = R @ X_world + t``; lengths in mm.
"""

from __future__ import annotations

import numpy as np


def rot_x(angle: np.ndarray) -> np.ndarray:
    """Rotation matrices about x for an array of angles (radians): [...] -> [..., 3, 3]."""
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(c), np.zeros_like(c)
    return np.stack([o, z, z, z, c, -s, z, s, c], axis=-1).reshape(*np.shape(angle), 3, 3)


def rot_y(angle: np.ndarray) -> np.ndarray:
    """Rotation matrices about y for an array of angles (radians): [...] -> [..., 3, 3]."""
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(c), np.zeros_like(c)
    return np.stack([c, z, s, z, o, z, -s, z, c], axis=-1).reshape(*np.shape(angle), 3, 3)


def rot_z(angle: np.ndarray) -> np.ndarray:
    """Rotation matrices about z for an array of angles (radians): [...] -> [..., 3, 3]."""
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(c), np.zeros_like(c)
    return np.stack([c, -s, z, s, c, z, z, z, o], axis=-1).reshape(*np.shape(angle), 3, 3)


def axis_angle(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues rotation about unit ``axis`` [..., 3] by ``angle`` [...] -> [..., 3, 3]."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(*x.shape, 3, 3)
    a = np.asarray(angle, dtype=np.float64)[..., None, None]
    eye = np.broadcast_to(np.eye(3), k.shape)
    return eye + np.sin(a) * k + (1.0 - np.cos(a)) * (k @ k)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World→camera (R, t) of cameras at ``eye`` looking at ``target``.

    ``up`` is the world direction that should appear upwards in the image (towards -y).
    Shapes: [..., 3] each -> R [..., 3, 3], t [..., 3].
    """
    fwd = target - eye
    fwd = fwd / np.linalg.norm(fwd, axis=-1, keepdims=True)
    right = np.cross(-up, fwd)
    right = right / np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(fwd, right)
    rot = np.stack([right, down, fwd], axis=-2)
    t = -np.einsum("...ij,...j->...i", rot, eye)
    return rot, t


def project(points: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Pinhole projection of camera-frame points [..., J, 3] with K [..., 3, 3] -> [..., J, 2]."""
    hom = np.einsum("...ij,...kj->...ki", intrinsics, points)
    return hom[..., :2] / hom[..., 2:3]


def world_to_camera(points: np.ndarray, rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Apply X_cam = R X + t to world points [..., J, 3] with R [..., 3, 3], t [..., 3]."""
    return np.einsum("...ij,...kj->...ki", rot, points) + trans[..., None, :]


def camera_to_world(points: np.ndarray, rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Inverse of :func:`world_to_camera`: X = Rᵀ (X_cam − t)."""
    return np.einsum("...ji,...kj->...ki", rot, points - trans[..., None, :])


def projection_matrices(intrinsics: np.ndarray, rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """3×4 matrices P = K [R | t] for each view: [..., 3, 3] ×2, [..., 3] -> [..., 3, 4]."""
    return intrinsics @ np.concatenate([rot, trans[..., :, None]], axis=-1)


def triangulate(
    kp2d: np.ndarray, proj: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Linear (DLT) triangulation of joints seen in several calibrated views.

    kp2d [V, J, 2] pixels, proj [V, 3, 4]; optional weights [V, J] (0 drops a view for a
    joint, e.g. an invisible one). Returns world points [J, 3] (float64). Each joint is the
    smallest right singular vector of its stacked 2V×4 system, solved for all joints at once.

    A numpy face of :func:`bench.models.triangulation.triangulate`, so that the project has
    one DLT (conditioned, float64; see there for joints seen by fewer than two views).
    """
    # Imported here, not at the top: bench.models pulls in timm, which importing the numpy
    # geometry should not cost.
    import torch

    from bench.models.triangulation import triangulate as dlt

    def batch(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(x, dtype=np.float64))[None]

    w = None if weights is None else batch(weights)
    return dlt(batch(kp2d), batch(proj), w)[0].numpy()
