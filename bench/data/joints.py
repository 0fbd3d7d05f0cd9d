"""Joint sets, raw dataset joint orders and the index tables that convert between them.

This module is the single place where joint orders live.  Converters, metrics, flips and
plots all read from here, so a wrong index can only be wrong once, and the tests in
``tests/test_joints.py`` check every table against the joint *names* of both ends.

Vocabulary: every name in every set and order below is drawn from one vocabulary
(``l_``/``r_`` prefixes for body sides, ``left_``/``right_`` for the two RHD hand blocks,
``<finger>_<joint>`` for hands), so two sets that use the same name for a joint can be
compared by name.  Where a dataset reuses a word for a *different* anatomical point, the
difference is spelled out at the definition (notably H36M-17 ``neck`` = neck/nose point and
``head`` = head top).

Index tables follow ``target[i] = source[index[i]]`` and are copied literally from
``../shared/reference/datasets.md`` §4 (tags [V]/[L]/[U] there say how sure they are).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from bench.errors import DabenchError

__all__ = [
    "J14_EVAL_ROOT",
    "JOINT_ORDERS",
    "JOINT_SETS",
    "MAPPINGS",
    "JointMapping",
    "JointOrder",
    "JointSet",
    "get_joint_set",
    "get_mapping",
    "joint_names",
]


def _describe(names: tuple[str, ...]) -> str:
    return ", ".join(names)


def _index_of(kind: str, set_name: str, joints: tuple[str, ...], name: str) -> int:
    try:
        return joints.index(name)
    except ValueError:
        raise DabenchError(
            f"unknown joint {name!r} in {kind} {set_name!r}; valid names: {_describe(joints)}"
        ) from None


# --------------------------------------------------------------------------------------------
# Joint sets (orders with a kinematic tree)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JointSet:
    """A joint order the harness evaluates in: names, kinematic tree, mirror pairs, groups.

    ``root`` is the root of the kinematic tree and, for every set except ``common14``, the
    joint subtracted for root-relative 3D.  ``eval_root`` exists because LSP-14 / SPIN J14 has
    no pelvis: its protocol root is the *midpoint of the hips*, which is not a joint, so the
    tree root and the evaluation root have to be stored separately.  Empty means ``(root,)``;
    use :meth:`root_position` rather than indexing ``root`` directly when doing root-relative
    evaluation.
    """

    name: str
    joints: tuple[str, ...]
    parents: tuple[int, ...]
    root: int
    flip_pairs: tuple[tuple[int, int], ...]
    groups: Mapping[str, tuple[int, ...]] = field(hash=False)
    eval_root: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # Freeze the groups so a caller cannot change a shared, module-level definition.
        frozen = MappingProxyType({k: tuple(int(i) for i in v) for k, v in self.groups.items()})
        object.__setattr__(self, "groups", frozen)
        self._validate()

    def _validate(self) -> None:
        # Broken tables must fail at import time, not as silently wrong metrics later.
        k = len(self.joints)
        where = f"joint set {self.name!r}"
        if len(set(self.joints)) != k:
            raise DabenchError(f"{where}: joint names are not unique")
        if len(self.parents) != k:
            raise DabenchError(f"{where}: {len(self.parents)} parents for {k} joints")
        if not 0 <= self.root < k or self.parents[self.root] != -1:
            raise DabenchError(f"{where}: root {self.root} must be a joint with parent -1")
        for i, p in enumerate(self.parents):
            if i != self.root and not 0 <= p < k:
                raise DabenchError(f"{where}: joint {i} has invalid parent {p}")
        for i in range(k):
            j, steps = i, 0
            while j != self.root:
                j, steps = self.parents[j], steps + 1
                if steps > k:
                    raise DabenchError(f"{where}: joint {i} does not reach the root (cycle)")
        seen: set[int] = set()
        for a, b in self.flip_pairs:
            if a == b or a in seen or b in seen or not (0 <= a < k and 0 <= b < k):
                raise DabenchError(f"{where}: bad flip pair ({a}, {b})")
            seen.update((a, b))
        for g, idx in self.groups.items():
            if not idx or any(not 0 <= i < k for i in idx):
                raise DabenchError(f"{where}: group {g!r} has invalid indices {idx}")
        if any(not 0 <= i < k for i in self.eval_root):
            raise DabenchError(f"{where}: eval_root {self.eval_root} out of range")

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def root_name(self) -> str:
        return self.joints[self.root]

    @property
    def bones(self) -> tuple[tuple[int, int], ...]:
        """(parent, child) pairs in child order; bone-length and limb-plot code relies on K−1."""
        return tuple((p, i) for i, p in enumerate(self.parents) if i != self.root)

    @property
    def eval_root_joints(self) -> tuple[int, ...]:
        """Joints whose mean is the origin for root-relative evaluation."""
        return self.eval_root or (self.root,)

    def index(self, name: str) -> int:
        return _index_of("joint set", self.name, self.joints, name)

    def flip_permutation(self) -> np.ndarray:
        """Permutation to apply after mirroring an image, so left labels stay on left joints."""
        perm = np.arange(self.num_joints, dtype=np.int64)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def children(self, i: int) -> tuple[int, ...]:
        if not 0 <= i < self.num_joints:
            raise DabenchError(
                f"joint index {i} out of range for joint set {self.name!r} "
                f"({self.num_joints} joints)"
            )
        return tuple(j for j, p in enumerate(self.parents) if p == i and j != self.root)

    def root_position(self, x: np.ndarray) -> np.ndarray:
        """``x[..., K, D] -> [..., D]``: the protocol root (hip midpoint for ``common14``)."""
        x = np.asarray(x)
        if x.ndim < 2 or x.shape[-2] != self.num_joints:
            raise DabenchError(
                f"joint set {self.name!r} expects [..., {self.num_joints}, D] input, "
                f"got shape {x.shape}"
            )
        return x[..., list(self.eval_root_joints), :].mean(axis=-2)


def _names(text: str) -> tuple[str, ...]:
    """Whitespace-separated names, so long joint lists stay laid out by body part."""
    return tuple(text.split())


def _chain(start: int, length: int, first_parent: int) -> list[int]:
    """Parents of a serial chain start..start+length-1 hanging from first_parent."""
    return [first_parent, *range(start, start + length - 1)]


_FINGERS = ("index", "middle", "ring", "little")

# FreiHAND / MANO / OpenPose hand order (datasets.md §4.1 "C21"). Index 1 is the thumb's
# carpometacarpal joint, which MANO/FreiHAND count as the thumb's first ("MCP") joint.
_HAND21_JOINTS: tuple[str, ...] = (
    "wrist",
    "thumb_cmc",
    "thumb_mcp",
    "thumb_ip",
    "thumb_tip",
    *(f"{f}_{j}" for f in _FINGERS for j in ("mcp", "pip", "dip", "tip")),
)

HAND21 = JointSet(
    name="hand21",
    joints=_HAND21_JOINTS,
    parents=(-1, *(p for b in range(1, 21, 4) for p in _chain(b, 4, 0))),
    root=0,
    flip_pairs=(),  # a single hand has no mirror partners; mirroring changes handedness only
    groups={
        # Transfer-Learning-Library Hand21KeypointDataset: the thumb's CMC/MCP/IP fall into
        # the mcp/pip/dip groups by position in the chain, not by anatomical name.
        "mcp": (1, 5, 9, 13, 17),
        "pip": (2, 6, 10, 14, 18),
        "dip": (3, 7, 11, 15, 19),
        "tip": (4, 8, 12, 16, 20),
        "all": tuple(range(21)),
    },
)

# Human3.6M 17-joint order (datasets.md §4.3). Caution, naming differs between code bases:
#   7 "spine"  = mks0601 "Torso" (raw spine1)
#   8 "thorax" = mks0601 "Neck", Martinez "Thorax"
#   9 "neck"   = the neck/nose point (mks0601 "Nose", Martinez "Neck/Nose"), NOT the neck base
#  10 "head"   = the head TOP (Martinez "Head"), not the head centre
H36M17 = JointSet(
    name="h36m17",
    joints=_names(
        """
        pelvis
        r_hip r_knee r_ankle
        l_hip l_knee l_ankle
        spine thorax neck head
        l_shoulder l_elbow l_wrist
        r_shoulder r_elbow r_wrist
        """
    ),
    parents=(-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15),
    root=0,
    flip_pairs=((4, 1), (5, 2), (6, 3), (11, 14), (12, 15), (13, 16)),
    groups={
        "head": (9, 10),
        "shoulder": (11, 14),
        "elbow": (12, 15),
        "wrist": (13, 16),
        "hip": (1, 4),
        "knee": (2, 5),
        "ankle": (3, 6),
        "torso": (0, 7, 8),
        "all": tuple(range(17)),
    },
)

# LSP-14 / SPIN J14 (datasets.md §4.4). There is no pelvis, so the tree is rooted at the neck
# (the joint every limb chain can hang from symmetrically: neck->head_top, neck->shoulders,
# neck->hips as a torso "spine" bone). Symmetry keeps flip(parent(i)) == parent(flip(i)).
# Root-relative evaluation uses the hip midpoint (eval_root) as the protocol prescribes.
J14_EVAL_ROOT: tuple[int, ...] = (2, 3)
COMMON14 = JointSet(
    name="common14",
    joints=_names(
        """
        r_ankle r_knee r_hip
        l_hip l_knee l_ankle
        r_wrist r_elbow r_shoulder
        l_shoulder l_elbow l_wrist
        neck head_top
        """
    ),
    parents=(1, 2, 12, 12, 3, 4, 7, 8, 12, 12, 9, 10, -1, 12),
    root=12,
    flip_pairs=((3, 2), (4, 1), (5, 0), (9, 8), (10, 7), (11, 6)),
    groups={
        # J14 "neck" is the neck base (SPIN takes it from H36M thorax), so it is not a head
        # joint here, unlike H36M's neck/nose point.
        "head": (13,),
        "neck": (12,),
        "shoulder": (8, 9),
        "elbow": (7, 10),
        "wrist": (6, 11),
        "hip": (2, 3),
        "knee": (1, 4),
        "ankle": (0, 5),
        "all": tuple(range(14)),
    },
    eval_root=J14_EVAL_ROOT,
)

# SMPL 24 joints (SURREAL joints3D, 3DPW jointPositions; datasets.md §2.4) and the SMPL tree.
# SURREAL's stored labels may be mirrored w.r.t. SMPL (datasets.md §2.4): that is a converter
# decision (swap with flip_permutation), not a different joint set.
SMPL24 = JointSet(
    name="smpl24",
    joints=_names(
        """
        pelvis l_hip r_hip spine1 l_knee r_knee spine2 l_ankle
        r_ankle spine3 l_foot r_foot neck l_collar r_collar head
        l_shoulder r_shoulder l_elbow r_elbow l_wrist r_wrist l_hand
        r_hand
        """
    ),
    parents=(-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21),
    root=0,
    flip_pairs=((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23)),
    groups={
        # SMPL "head" is the head centre and "neck" the neck base: separate groups.
        "head": (15,),
        "neck": (12,),
        "collar": (13, 14),
        "shoulder": (16, 17),
        "elbow": (18, 19),
        "wrist": (20, 21),
        "hand": (22, 23),
        "hip": (1, 2),
        "knee": (4, 5),
        "ankle": (7, 8),
        "foot": (10, 11),
        "torso": (0, 3, 6, 9),
        "all": tuple(range(24)),
    },
)

# MPII Human Pose 16 joints (datasets.md §2.6), also tllib's Body16KeypointDataset order.
MPII16 = JointSet(
    name="mpii16",
    joints=_names(
        """
        r_ankle r_knee r_hip l_hip l_knee l_ankle pelvis thorax
        upper_neck head_top r_wrist r_elbow r_shoulder l_shoulder
        l_elbow l_wrist
        """
    ),
    parents=(1, 2, 6, 6, 3, 4, -1, 6, 7, 8, 11, 12, 7, 7, 13, 14),
    root=6,
    flip_pairs=((3, 2), (4, 1), (5, 0), (13, 12), (14, 11), (15, 10)),
    groups={
        "head": (9,),
        "shoulder": (12, 13),
        "elbow": (11, 14),
        "wrist": (10, 15),
        "hip": (2, 3),
        "knee": (1, 4),
        "ankle": (0, 5),
        # tllib/RegDA "Avg" column: the 12 limb joints only (metrics-reporting.md §1.10).
        "all": (0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15),
        "all16": tuple(range(16)),
    },
)

# MPI-INF-3DHP test-set / "relevant" 17 order (datasets.md §2.3, [V] mmpose). Its "neck" is
# the neck base and "head" the head centre; they only approximate H36M thorax / neck-nose.
MPI_INF_3DHP17 = JointSet(
    name="mpi_inf_3dhp17",
    joints=_names(
        """
        head_top neck
        r_shoulder r_elbow r_wrist
        l_shoulder l_elbow l_wrist
        r_hip r_knee r_ankle
        l_hip l_knee l_ankle
        pelvis spine head
        """
    ),
    parents=(16, 15, 1, 2, 3, 1, 5, 6, 14, 8, 9, 14, 11, 12, -1, 14, 1),
    root=14,
    flip_pairs=((5, 2), (6, 3), (7, 4), (11, 8), (12, 9), (13, 10)),
    groups={
        # Release version of mpii_get_pck_auc_joint_groups.m (all 17, root included in hip);
        # "all14" is the 14-joint variant some vendored copies use.
        "head": (0, 16),
        "neck": (1,),
        "shoulder": (2, 5),
        "elbow": (3, 6),
        "wrist": (4, 7),
        "spine": (15,),
        "hip": (8, 11, 14),
        "knee": (9, 12),
        "ankle": (10, 13),
        "all": tuple(range(17)),
        "all14": tuple(range(14)),
    },
)

JOINT_SETS: Mapping[str, JointSet] = MappingProxyType(
    {s.name: s for s in (HAND21, H36M17, COMMON14, SMPL24, MPII16, MPI_INF_3DHP17)}
)


def get_joint_set(name: str) -> JointSet:
    try:
        return JOINT_SETS[name]
    except KeyError:
        raise DabenchError(
            f"unknown joint set {name!r}; valid joint sets: {_describe(tuple(JOINT_SETS))}"
        ) from None


# --------------------------------------------------------------------------------------------
# Raw dataset orders (names only; converters map them onto a JointSet)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JointOrder:
    """A dataset's on-disk joint order; no tree because nothing is evaluated in it."""

    name: str
    joints: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(set(self.joints)) != len(self.joints):
            raise DabenchError(f"joint order {self.name!r}: joint names are not unique")

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def index(self, name: str) -> int:
        return _index_of("joint order", self.name, self.joints, name)


# RHD, one hand block: wrist, then every finger tip -> base (datasets.md §1.2).
_RHD21_JOINTS: tuple[str, ...] = (
    "wrist",
    "thumb_tip",
    "thumb_ip",
    "thumb_mcp",
    "thumb_cmc",
    *(f"{f}_{j}" for f in _FINGERS for j in ("tip", "dip", "pip", "mcp")),
)

# STB: palm centre first (NOT the wrist, datasets.md §4.2), then little, ring, middle,
# index, thumb, each base -> tip; the thumb's first joint is what C21 calls thumb_cmc.
_STB21_JOINTS: tuple[str, ...] = (
    "palm",
    *(f"{f}_{j}" for f in reversed(_FINGERS) for j in ("mcp", "pip", "dip", "tip")),
    "thumb_cmc",
    "thumb_mcp",
    "thumb_ip",
    "thumb_tip",
)

# MVHand (Yu et al., BMVC 2021), the order of its authors' toolkit README
# (ShichengChen/multiviewDataset): wrist, then index, middle, ring, pinky, thumb, each
# base -> tip. The README calls the thumb's joints "mcp, pip, dip, tip"; its first one is the
# thumb's base, what C21 calls thumb_cmc (as for STB) [U: the README names no landmark].
_MVHAND21_JOINTS: tuple[str, ...] = (
    "wrist",
    *(f"{f}_{j}" for f in _FINGERS for j in ("mcp", "pip", "dip", "tip")),
    "thumb_cmc",
    "thumb_mcp",
    "thumb_ip",
    "thumb_tip",
)

# Raw H36M-32 (datasets.md §4.3, [L] names). Renamed to the shared vocabulary where the joint
# is one of the 17: raw "hip" -> pelvis, raw "spine1" -> spine, raw "head" -> head (top).
# Raw 11 "spine" sits at/near the hip and is called spine_base here to keep "spine" for the
# H36M-17 joint. End-effector "site" markers keep their raw index in the name.
_H36M32_JOINTS: tuple[str, ...] = _names(
    """
    pelvis r_hip r_knee r_ankle r_toe site_5
    l_hip l_knee l_ankle l_toe site_10
    spine_base spine thorax neck head
    l_shoulder_anchor l_shoulder l_elbow l_wrist l_thumb site_21
    l_wrist_end site_23
    r_shoulder_anchor r_shoulder r_elbow r_wrist r_thumb site_29
    r_wrist_end site_31
    """
)

# MPI-INF-3DHP 28-joint training order (datasets.md §2.3, [V] mpii_get_joint_set.m);
# left_/right_ of the original renamed l_/r_.
_MPI_INF_3DHP28_JOINTS: tuple[str, ...] = _names(
    """
    spine3 spine4 spine2 spine pelvis neck head head_top
    l_clavicle l_shoulder l_elbow l_wrist l_hand
    r_clavicle r_shoulder r_elbow r_wrist r_hand
    l_hip l_knee l_ankle l_foot l_toe
    r_hip r_knee r_ankle r_foot r_toe
    """
)

# HumanEva-I 15 joints (datasets.md §2.5, VP3D ConvertHumanEva.m). Whether "head" is the head
# top or the head centre is not verified, hence the approximate flags in the mappings below.
_HUMANEVA15_JOINTS: tuple[str, ...] = _names(
    """
    pelvis thorax
    l_shoulder l_elbow l_wrist
    r_shoulder r_elbow r_wrist
    l_hip l_knee l_ankle
    r_hip r_knee r_ankle
    head
    """
)

# OpenPose COCO-18 (3DPW poses2d; datasets.md §2.2, [U] standard order). OpenPose "neck" is
# the shoulder midpoint.
_COCO18_JOINTS: tuple[str, ...] = _names(
    """
    nose neck
    r_shoulder r_elbow r_wrist
    l_shoulder l_elbow l_wrist
    r_hip r_knee r_ankle
    l_hip l_knee l_ankle
    r_eye l_eye r_ear l_ear
    """
)

JOINT_ORDERS: Mapping[str, JointOrder] = MappingProxyType(
    {
        o.name: o
        for o in (
            JointOrder("rhd21", _RHD21_JOINTS),
            # RHD pickles hold the left hand in 0-20 and the right hand in 21-41.
            JointOrder(
                "rhd42",
                tuple(f"left_{n}" for n in _RHD21_JOINTS)
                + tuple(f"right_{n}" for n in _RHD21_JOINTS),
            ),
            JointOrder("stb21", _STB21_JOINTS),
            JointOrder("mvhand21", _MVHAND21_JOINTS),
            JointOrder("h36m32", _H36M32_JOINTS),
            JointOrder("mpi_inf_3dhp28", _MPI_INF_3DHP28_JOINTS),
            JointOrder("humaneva15", _HUMANEVA15_JOINTS),
            JointOrder("coco18", _COCO18_JOINTS),
        )
    }
)


def joint_names(name: str) -> tuple[str, ...]:
    """Joint names of a JointSet or JointOrder; mappings may start from either."""
    if name in JOINT_SETS:
        return JOINT_SETS[name].joints
    if name in JOINT_ORDERS:
        return JOINT_ORDERS[name].joints
    valid = (*JOINT_SETS, *JOINT_ORDERS)
    raise DabenchError(f"unknown joint set or order {name!r}; valid names: {_describe(valid)}")


# --------------------------------------------------------------------------------------------
# Mappings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JointMapping:
    """``target[i] = source[index[i]]``; ``None`` where the source has no such joint.

    Missing joints become NaN (coordinates) / False (visibility) instead of being dropped,
    so every converted array has the target's K and metrics can mask them uniformly.
    ``approximate`` lists target slots filled by a nearby but different landmark (e.g. the
    STB palm centre for the wrist); metrics may want to exclude or report them separately.
    """

    source: str
    target: str
    index: tuple[int | None, ...]
    approximate: tuple[int, ...] = ()
    note: str = ""

    def __post_init__(self) -> None:
        # Validate against the registered names so a typo in a table fails at import time.
        k_src, k_tgt = len(joint_names(self.source)), len(joint_names(self.target))
        where = f"mapping {self.label!r}"
        if len(self.index) != k_tgt:
            raise DabenchError(f"{where}: {len(self.index)} entries for {k_tgt} target joints")
        if any(i is not None and not 0 <= i < k_src for i in self.index):
            raise DabenchError(f"{where}: source index out of range 0..{k_src - 1}")
        if any(not 0 <= a < k_tgt or self.index[a] is None for a in self.approximate):
            raise DabenchError(f"{where}: approximate slots must be mapped target indices")

    @property
    def label(self) -> str:
        return f"{self.source}->{self.target}"

    @property
    def num_source_joints(self) -> int:
        return len(joint_names(self.source))

    @property
    def num_target_joints(self) -> int:
        return len(self.index)

    @property
    def missing(self) -> tuple[int, ...]:
        """Target slots with no source equivalent."""
        return tuple(i for i, s in enumerate(self.index) if s is None)

    def _check(self, shape: tuple[int, ...], axis: int, what: str) -> None:
        k = self.num_source_joints
        if len(shape) < -axis or shape[axis] != k:
            raise DabenchError(
                f"mapping {self.label!r} expects {k} source joints ({what}), got shape {shape}"
            )

    def _pairs(self) -> tuple[list[int], list[int]]:
        tgt = [i for i, s in enumerate(self.index) if s is not None]
        src = [s for s in self.index if s is not None]
        return tgt, src

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``x[..., K_src, D] -> [..., K_tgt, D]`` (float; NaN in unmapped slots)."""
        x = np.asarray(x)
        self._check(x.shape, -2, "[..., K, D]")
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
        out = np.full((*x.shape[:-2], self.num_target_joints, x.shape[-1]), np.nan, dtype=dtype)
        tgt, src = self._pairs()
        out[..., tgt, :] = x[..., src, :]
        return out

    def apply_vis(self, vis: np.ndarray) -> np.ndarray:
        """``vis[..., K_src] -> [..., K_tgt]`` (bool; False in unmapped slots)."""
        vis = np.asarray(vis)
        self._check(vis.shape, -1, "[..., K]")
        out = np.zeros((*vis.shape[:-1], self.num_target_joints), dtype=bool)
        tgt, src = self._pairs()
        out[..., tgt] = vis[..., src].astype(bool)
        return out


_ = None  # "no equivalent" in the tables below, so they read like the reference's "-"

_MAPPING_LIST: tuple[JointMapping, ...] = (
    # ---- hands -> hand21 (datasets.md §4.1)
    JointMapping("hand21", "hand21", tuple(range(21)), note="identity"),
    JointMapping(
        "rhd21",
        "hand21",
        (0, 4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9, 16, 15, 14, 13, 20, 19, 18, 17),
        note="[V] tllib left_hand_index; add 21 to every index for the right-hand block",
    ),
    JointMapping(
        "stb21",
        "hand21",
        (0, 17, 18, 19, 20, 13, 14, 15, 16, 9, 10, 11, 12, 5, 6, 7, 8, 1, 2, 3, 4),
        approximate=(0,),
        note="[V] derived from hand3d/bihand. STB 0 is the palm centre, not the wrist: "
        "either extrapolate a wrist or convert the other datasets to palm (datasets.md §4.2)",
    ),
    JointMapping(
        "mvhand21",
        "hand21",
        (0, 17, 18, 19, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16),
        note="[V] the MVHand toolkit README's order (wrist, index, middle, ring, pinky, "
        "thumb; base -> tip); its thumb 'mcp' taken as hand21's first thumb joint [U]",
    ),
    # ---- bodies -> h36m17 (datasets.md §4.3)
    JointMapping(
        "h36m32",
        "h36m17",
        (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27),
        note="[V] mmpose movable_joints / VP3D",
    ),
    JointMapping(
        "mpi_inf_3dhp28",
        "h36m17",
        (4, 23, 24, 25, 18, 19, 20, 3, 5, 6, 7, 9, 10, 11, 14, 15, 16),
        approximate=(7, 8, 9),
        note="[L] several repos. 3DHP spine/neck/head only approximate H36M "
        "spine/thorax/neck-nose (metrics-reporting.md §1.7); 3DHP head_top = H36M head (top)",
    ),
    JointMapping(
        "mpi_inf_3dhp17",
        "h36m17",
        (14, 8, 9, 10, 11, 12, 13, 15, 1, 16, 0, 5, 6, 7, 2, 3, 4),
        approximate=(7, 8, 9),
        note="[L] several repos. 3DHP spine/neck/head only approximate H36M "
        "spine/thorax/neck-nose (metrics-reporting.md §1.7); 3DHP head_top = H36M head (top)",
    ),
    JointMapping(
        "mpii16",
        "h36m17",
        (6, 2, 1, 0, 3, 4, 5, _, 7, 8, 9, 13, 14, 15, 12, 11, 10),
        approximate=(9,),
        note="derived. MPII has no spine; upper_neck only approximates H36M neck/nose",
    ),
    JointMapping(
        "humaneva15",
        "h36m17",
        (0, 11, 12, 13, 8, 9, 10, _, 1, _, 14, 2, 3, 4, 5, 6, 7),
        approximate=(10,),
        note="derived. No spine or neck/nose; HumanEva head vs head top unverified [U]",
    ),
    JointMapping(
        "smpl24",
        "h36m17",
        (0, 2, 5, 8, 1, 4, 7, 6, 12, 15, _, 16, 18, 20, 17, 19, 21),
        approximate=(7, 8, 9),
        note="approximate: spine<-spine2 (reference allows spine1 or spine2; spine2 is "
        "roughly halfway pelvis-neck like H36M spine [U]), thorax<-neck, neck/nose<-head "
        "centre, no head top. SMPL hips sit inside the pelvis; the standard practice is "
        "regressing H36M-17 from the mesh with J_regressor_h36m",
    ),
    JointMapping(
        "coco18",
        "h36m17",
        (_, 8, 9, 10, 11, 12, 13, _, 1, 0, _, 5, 6, 7, 2, 3, 4),
        approximate=(8, 9),
        note="derived. Pelvis missing (use the hip midpoint if needed), no spine or head "
        "top; OpenPose neck (shoulder midpoint) ~ thorax, nose ~ H36M neck/nose",
    ),
    JointMapping(
        "common14",
        "h36m17",
        (_, 2, 1, 0, 3, 4, 5, _, 12, _, 13, 9, 10, 11, 8, 7, 6),
        approximate=(8, 10),
        note="derived, the inverse of SPIN's H36M_TO_J14 (thorax <- J14 neck); head <- "
        "head top; pelvis (the hip midpoint, not a joint of J14), spine and neck/nose "
        "missing. LSP's 2D-only labels reach the body sets this way",
    ),
    # ---- -> common14 (datasets.md §4.4)
    JointMapping(
        "h36m17",
        "common14",
        (3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10),
        approximate=(12,),
        note="[V] SPIN H36M_TO_J14 convention (J14 neck <- H36M thorax)",
    ),
    JointMapping(
        "mpi_inf_3dhp17",
        "common14",
        (10, 9, 8, 11, 12, 13, 4, 3, 2, 5, 6, 7, 1, 0),
        note="derived",
    ),
    JointMapping(
        "mpi_inf_3dhp28",
        "common14",
        (25, 24, 23, 18, 19, 20, 16, 15, 14, 9, 10, 11, 5, 7),
        note="derived",
    ),
    JointMapping(
        "smpl24",
        "common14",
        (8, 5, 2, 1, 4, 7, 21, 19, 17, 16, 18, 20, 12, 15),
        approximate=(13,),
        note="derived. head_top <- SMPL head centre. For SURREAL, if the stored labels are "
        "mirrored (datasets.md §2.4), swap L/R with smpl24's flip_permutation first",
    ),
    JointMapping(
        "mpii16",
        "common14",
        (0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 8, 9),
        approximate=(12,),
        note="derived; J14 neck <- upper_neck as tllib's LSP<->MPII conversion does. Differs "
        "from mpii16->h36m17->common14, which gives the thorax for J14 neck",
    ),
    JointMapping(
        "humaneva15",
        "common14",
        (13, 12, 11, 8, 9, 10, 7, 6, 5, 2, 3, 4, 1, 14),
        approximate=(12, 13),
        note="derived. J14 neck <- thorax; HumanEva head vs head top unverified [U]",
    ),
    JointMapping(
        "coco18",
        "common14",
        (10, 9, 8, 11, 12, 13, 4, 3, 2, 5, 6, 7, 1, _),
        note="derived. No head top in COCO-18",
    ),
    # ---- extra: 3DHP training order -> test order
    JointMapping(
        "mpi_inf_3dhp28",
        "mpi_inf_3dhp17",
        (7, 5, 14, 15, 16, 9, 10, 11, 23, 24, 25, 18, 19, 20, 4, 3, 6),
        note="[V] mpii_get_joint_set.m 'relevant' joints",
    ),
)

MAPPINGS: Mapping[tuple[str, str], JointMapping] = MappingProxyType(
    {(m.source, m.target): m for m in _MAPPING_LIST}
)


def get_mapping(source: str, target: str) -> JointMapping:
    """Registered mapping, or the identity when ``source == target``."""
    if (source, target) in MAPPINGS:
        return MAPPINGS[(source, target)]
    if source == target:
        return JointMapping(source, target, tuple(range(len(joint_names(source)))), note="identity")
    pairs = ", ".join(f"{s}->{t}" for s, t in MAPPINGS)
    raise DabenchError(f"no joint mapping {source}->{target}; available mappings: {pairs}")
