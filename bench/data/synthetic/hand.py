"""Procedural right hand on the ``hand21`` joint set.

Hand frame: x radial (thumb side), y distal (towards the fingers), z palmar (out of the
palm), origin at the wrist; mm for a 1.0-scale adult hand (palm length ≈ 90 mm). Left
from right is in the picture: the thumb is shorter and thicker than the little finger,
the palm is lighter than the back of the hand, and the fingernails show only from the
back.
"""

from __future__ import annotations

import numpy as np

from bench.data.geometry import rot_x, rot_y, rot_z
from bench.data.synthetic.skeleton import Capsule, Dof, Marker, SkeletonModel, Slab

_FINGERS = {
    # name: (MCP position in the wrist frame, phalanx lengths, radii at MCP/PIP/DIP/tip, splay)
    "index": ((21.0, 86.0, 0.0), (40.0, 24.0, 20.0), (9.5, 8.5, 8.0, 7.5), -0.10),
    "middle": ((2.0, 90.0, 0.0), (45.0, 28.0, 22.0), (10.0, 9.0, 8.5, 8.0), 0.0),
    "ring": ((-16.0, 84.0, 0.0), (42.0, 27.0, 21.0), (9.0, 8.5, 8.0, 7.5), 0.10),
    "little": ((-31.0, 74.0, 0.0), (33.0, 20.0, 18.0), (8.0, 7.5, 7.0, 6.5), 0.22),
}
_THUMB_LENGTHS = (42.0, 32.0, 27.0)
_THUMB_RADII = (13.0, 12.0, 11.0, 10.0)


def _build() -> SkeletonModel:
    offsets: dict[str, tuple[float, float, float]] = {"thumb_cmc": (22.0, 22.0, 8.0)}
    rest: dict[str, np.ndarray] = {
        # The thumb leaves the palm radially and palmar, twisted so that flexion sweeps the
        # tip across the palm (opposition) rather than within the palm plane.
        "thumb_cmc": rot_z(np.float64(-0.8)) @ rot_y(np.float64(-0.8)) @ rot_x(np.float64(0.3)),
    }
    for name, length in zip(("thumb_mcp", "thumb_ip", "thumb_tip"), _THUMB_LENGTHS, strict=True):
        offsets[name] = (0.0, length, 0.0)
    dofs = [
        Dof("wrist_flex", "wrist", "x", -0.6, 0.6, 0.0, 0.3),
        Dof("wrist_dev", "wrist", "z", -0.3, 0.3, 0.0, 0.15),
        Dof("thumb_cmc_abd", "thumb_cmc", "z", -0.4, 0.5, 0.0, 0.25),
        Dof("thumb_cmc_flex", "thumb_cmc", "x", -0.2, 0.9, 0.0, 0.3),
        Dof("thumb_mcp_flex", "thumb_mcp", "x", -0.2, 1.0, 0.0, 0.3),
        Dof("thumb_ip_flex", "thumb_ip", "x", -0.2, 1.4, 0.0, 0.35),
    ]
    scale_groups = {"wrist": "palm", "thumb_cmc": "palm"}
    for name in ("thumb_mcp", "thumb_ip", "thumb_tip"):
        scale_groups[name] = "thumb"
    markers = [Marker("thumb_nail", "thumb_ip", (0.0, 17.0, -6.5))]
    capsules = [Capsule("wrist", "thumb_cmc", 15.0, 13.0, "skin")]
    chain = ["thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip"]
    for i in range(3):
        capsules.append(
            Capsule(chain[i], chain[i + 1], _THUMB_RADII[i], _THUMB_RADII[i + 1], "skin")
        )
    for finger, (mcp, lengths, radii, splay) in _FINGERS.items():
        joints = [f"{finger}_{j}" for j in ("mcp", "pip", "dip", "tip")]
        offsets[joints[0]] = mcp
        rest[joints[0]] = rot_z(np.float64(splay))
        for j, length in zip(joints[1:], lengths, strict=True):
            offsets[j] = (0.0, length, 0.0)
        scale_groups[joints[0]] = "palm"
        for j in joints[1:]:
            scale_groups[j] = "fingers"
        dofs += [
            Dof(f"{finger}_mcp_abd", joints[0], "z", -0.25, 0.25, 0.0, 0.12),
            Dof(f"{finger}_mcp_flex", joints[0], "x", -0.35, 1.57, -0.1, 0.4),
            Dof(f"{finger}_pip_flex", joints[1], "x", 0.0, 1.9, 0.05, 0.4),
            Dof(f"{finger}_dip_flex", joints[2], "x", 0.0, 1.3, 0.05, 0.3),
        ]
        for i in range(3):
            capsules.append(Capsule(joints[i], joints[i + 1], radii[i], radii[i + 1], "skin"))
        nail = (0.0, 0.6 * lengths[2], -0.6 * radii[3])
        markers.append(Marker(f"{finger}_nail", joints[2], nail))
    markers += [
        Marker("wrist_radial", "wrist", (24.0, 4.0, 0.0)),
        Marker("wrist_ulnar", "wrist", (-27.0, 4.0, 0.0)),
        Marker("forearm", "wrist", (0.0, -130.0, 0.0)),
    ]
    capsules += [
        Capsule("wrist_radial", "wrist_ulnar", 14.0, 14.0, "skin"),
        Capsule("wrist", "forearm", 26.0, 31.0, "sleeve"),
    ]
    spheres = tuple((f"{f}_nail", 0.62 * _FINGERS[f][2][3], "nail") for f in _FINGERS)
    spheres += (("thumb_nail", 0.62 * _THUMB_RADII[3], "nail"),)
    palm = Slab(
        # Middle and ring MCPs lie almost on the index–little edge; leaving them out saves
        # two triangles, and the finger bases cover the difference.
        points=("wrist_ulnar", "wrist_radial", "thumb_cmc", "index_mcp", "little_mcp"),
        frames=("wrist",) * 5,
        half=10.0,
        front="palm",
        back="back",
    )
    curls = [
        ((f"{f}_mcp_flex", f"{f}_pip_flex", f"{f}_dip_flex"), (1.4, 1.7, 1.0)) for f in _FINGERS
    ]
    curls.append((("thumb_cmc_flex", "thumb_mcp_flex", "thumb_ip_flex"), (0.7, 0.8, 1.1)))
    synergies = tuple(curls)
    label_shift = {f"{f}_mcp": (f"{f}_pip", 0.25) for f in _FINGERS}
    label_shift |= {f"{f}_tip": (f"{f}_dip", 0.2) for f in _FINGERS}
    label_shift["thumb_tip"] = ("thumb_ip", 0.2)
    return SkeletonModel(
        joint_set="hand21",
        offsets=offsets,
        rest=rest,
        dofs=tuple(dofs),
        scale_groups=scale_groups,
        scale_range=(0.85, 1.15),
        scale_jitter=0.05,
        markers=tuple(markers),
        capsules=tuple(capsules),
        spheres=spheres,
        slabs=(palm,),
        slots=("skin", "palm", "back", "nail", "sleeve"),
        label_shift=label_shift,
        synergies=synergies,
    )


HAND = _build()
