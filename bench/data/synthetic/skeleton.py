"""Articulated skeleton models: degrees of freedom with anatomical limits, subjects, motion.

A model is data (rest offsets, rest rotations, DoFs, markers, render primitives); the
functions here are shared by the hand and the body. Everything is batched over samples
and runs in float64 so that labels are exact before they are stored as float32.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from bench.data.geometry import rot_x, rot_y, rot_z
from bench.data.joints import JointSet, get_joint_set

_AXES = {"x": rot_x, "y": rot_y, "z": rot_z}


@dataclass(frozen=True)
class Dof:
    """One rotational degree of freedom of a joint frame (radians).

    ``low``/``high`` are the anatomical limits; poses are drawn around ``neutral`` with
    ``spread`` (std) and clipped to the limits, so every sampled pose is inside them.
    """

    name: str
    joint: str
    axis: str
    low: float
    high: float
    neutral: float = 0.0
    spread: float = 0.5


@dataclass(frozen=True)
class Marker:
    """A render-only point rigidly attached to a joint frame (e.g. a fingernail, a nose)."""

    name: str
    joint: str
    offset: tuple[float, float, float]


@dataclass(frozen=True)
class Capsule:
    """A limb segment between two named points with radii (mm) at both ends."""

    a: str
    b: str
    ra: float
    rb: float
    slot: str


@dataclass(frozen=True)
class Slab:
    """A thick flat part (palm, torso): a polygon offset ±``half`` mm along each point's
    frame z axis. The +z face is coloured ``front``, the −z face ``back``; which face the
    camera sees is a real chirality cue (palm vs back of the hand, chest vs back)."""

    points: tuple[str, ...]
    frames: tuple[str, ...]
    half: float
    front: str
    back: str


@dataclass(frozen=True)
class SkeletonModel:
    """Kinematic tree over a joint set plus what the renderer needs.

    ``offsets[j]`` is joint j's rest position in its parent's frame (mm); ``rest[j]`` is
    the rest rotation of joint j's frame relative to its parent's frame; the DoFs of a
    joint rotate its frame after the rest rotation, in declaration order, so a DoF of
    joint j moves j's descendants, not j itself.
    """

    joint_set: str
    offsets: Mapping[str, tuple[float, float, float]]
    rest: Mapping[str, np.ndarray]
    dofs: tuple[Dof, ...]
    scale_groups: Mapping[str, str]
    scale_range: tuple[float, float]
    scale_jitter: float
    markers: tuple[Marker, ...] = ()
    capsules: tuple[Capsule, ...] = ()
    spheres: tuple[tuple[str, float, str], ...] = ()
    slabs: tuple[Slab, ...] = ()
    slots: tuple[str, ...] = ()
    label_shift: Mapping[str, tuple[str, float]] = field(default_factory=dict)
    # Coupled DoFs: (DoF names, weights); one latent in [0, 1] per synergy drives all its
    # DoFs (a finger curls at MCP, PIP and DIP together), independent noise on top.
    synergies: tuple[tuple[tuple[str, ...], tuple[float, ...]], ...] = ()

    @property
    def jset(self) -> JointSet:
        return get_joint_set(self.joint_set)

    @property
    def point_names(self) -> tuple[str, ...]:
        """Joints first (in joint-set order), then markers: the rows of ``points``."""
        return self.jset.joints + tuple(m.name for m in self.markers)

    def dof_limits(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([d.low for d in self.dofs]), np.array([d.high for d in self.dofs]))

    def sample_pose(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Independent poses [n, D] within the limits."""
        neutral = np.array([d.neutral for d in self.dofs])
        spread = np.array([d.spread for d in self.dofs])
        low, high = self.dof_limits()
        pose = neutral + spread * rng.standard_normal((n, len(self.dofs)))
        names = [d.name for d in self.dofs]
        for dof_names, weights in self.synergies:
            # U-shaped latent: open and closed hands are both common, half-curls less so.
            latent = rng.beta(0.7, 0.7, size=(n, 1))
            cols = [names.index(d) for d in dof_names]
            pose[:, cols] = (
                neutral[cols] + latent * np.asarray(weights) + 0.3 * (pose[:, cols] - neutral[cols])
            )
        return np.clip(pose, low, high)

    def sample_subject(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Per-subject scale of every joint's rest offset [n, K]: an overall size times a
        per-group proportion jitter (so limbs and torso vary independently)."""
        groups = sorted(set(self.scale_groups.values()))
        overall = rng.uniform(*self.scale_range, size=(n, 1))
        jitter = 1.0 + self.scale_jitter * np.clip(rng.standard_normal((n, len(groups))), -2, 2)
        col = [groups.index(self.scale_groups[name]) for name in self.jset.joints]
        return overall * jitter[:, col]


def forward_kinematics(
    model: SkeletonModel,
    pose: np.ndarray,
    scale: np.ndarray,
    root_rot: np.ndarray,
    root_pos: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of joints and markers [B, P, 3] and joint frames [B, K, 3, 3].

    pose [B, D] radians, scale [B, K], root_rot [B, 3, 3] (frame of the root joint in the
    output space), root_pos [B, 3] (mm).
    """
    jset = model.jset
    num = pose.shape[0]
    local = np.broadcast_to(np.eye(3), (num, jset.num_joints, 3, 3)).copy()
    for k, name in enumerate(jset.joints):
        if name in model.rest:
            local[:, k] = model.rest[name]
    for d, dof in enumerate(model.dofs):
        k = jset.index(dof.joint)
        local[:, k] = local[:, k] @ _AXES[dof.axis](pose[:, d])
    frames = np.empty_like(local)
    pos = np.zeros((num, jset.num_joints, 3))
    for k, parent in enumerate(jset.parents):
        if parent < 0:
            frames[:, k] = root_rot @ local[:, k]
            pos[:, k] = root_pos
            continue
        offset = np.asarray(model.offsets[jset.joints[k]], dtype=np.float64) * scale[:, k, None]
        pos[:, k] = pos[:, parent] + np.einsum("bij,bj->bi", frames[:, parent], offset)
        frames[:, k] = frames[:, parent] @ local[:, k]
    marks = []
    for m in model.markers:
        k = jset.index(m.joint)
        off = np.asarray(m.offset) * scale[:, k, None]
        marks.append(pos[:, k] + np.einsum("bij,bj->bi", frames[:, k], off))
    points = np.concatenate([pos, np.stack(marks, 1)], axis=1) if marks else pos
    return points, frames


def shifted_labels(model: SkeletonModel, joints: np.ndarray) -> np.ndarray:
    """Apply a label convention change: joint j moves a fraction of the way along the bone
    to another joint. Points on a bone stay inside the limb, so the label still lies on
    the silhouette while its position is systematically different (like SURREAL vs H36M
    shoulders)."""
    out = joints.copy()
    jset = model.jset
    for name, (towards, frac) in model.label_shift.items():
        i, j = jset.index(name), jset.index(towards)
        out[..., i, :] = joints[..., i, :] + frac * (joints[..., j, :] - joints[..., i, :])
    return out


def smooth_track(
    rng: np.random.Generator,
    keys: np.ndarray,
    num_frames: int,
    key_stride: int,
) -> np.ndarray:
    """Interpolate keyframes [S, Kf, D] to frames [S, num_frames, D] with a cosine ease.

    Every frame is a convex combination of two keyframes, so limits that hold at the
    keys hold on every frame, and the per-frame change is at most π/2 · Δkey / stride.
    A random phase keeps keyframes from landing on the same frames in every sequence.
    """
    num_seq = keys.shape[0]
    phase = rng.uniform(0, key_stride, size=(num_seq, 1))
    t = (np.arange(num_frames)[None, :] + phase) / key_stride
    i0 = np.floor(t).astype(int)
    w = 0.5 - 0.5 * np.cos(np.pi * (t - i0))
    rows = np.arange(num_seq)[:, None]
    return (1 - w)[..., None] * keys[rows, i0] + w[..., None] * keys[rows, i0 + 1]


def random_walk_keys(
    model: SkeletonModel, rng: np.random.Generator, num_seq: int, num_keys: int, step: float
) -> np.ndarray:
    """Keyframe poses [S, Kf, D]: each key moves ``step`` of the way to a fresh sample, so
    sequences wander smoothly through the pose prior instead of jumping across it."""
    keys = np.empty((num_seq, num_keys, len(model.dofs)))
    keys[:, 0] = model.sample_pose(rng, num_seq)
    for k in range(1, num_keys):
        target = model.sample_pose(rng, num_seq)
        keys[:, k] = keys[:, k - 1] + step * (target - keys[:, k - 1])
    return keys


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform random rotations [n, 3, 3] (QR of a Gaussian matrix with sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    det = np.linalg.det(q)
    q[:, :, 0] *= det[:, None]
    return q


def euler_zxy(angles: np.ndarray) -> np.ndarray:
    """R = Rz(a0) Rx(a1) Ry(a2) for angles [..., 3]."""
    return rot_z(angles[..., 0]) @ rot_x(angles[..., 1]) @ rot_y(angles[..., 2])
