"""Procedural human body on the ``h36m17`` joint set.

Body frame: x the subject's right, y down, z forward (right-handed with y down), origin
at the pelvis; mm for a 1.0-scale adult (≈1.75 m). Front from back is in the picture: a
face (eyes, nose) on the front of the head and hair on the back, a lighter shirt front
than back, and feet that point forward.
"""

from __future__ import annotations

from bench.data.synthetic.skeleton import Capsule, Dof, Marker, SkeletonModel, Slab


def _build() -> SkeletonModel:
    offsets = {
        "r_hip": (125.0, 40.0, 0.0),
        "l_hip": (-125.0, 40.0, 0.0),
        "r_knee": (0.0, 440.0, 0.0),
        "l_knee": (0.0, 440.0, 0.0),
        "r_ankle": (0.0, 430.0, 0.0),
        "l_ankle": (0.0, 430.0, 0.0),
        "spine": (0.0, -230.0, 10.0),
        "thorax": (0.0, -250.0, 0.0),
        "neck": (0.0, -165.0, 35.0),  # H36M's "neck/nose" joint sits at the nose
        "head": (0.0, -138.0, -88.0),  # head top, just inside the skull sphere
        "r_shoulder": (165.0, 15.0, 0.0),
        "l_shoulder": (-165.0, 15.0, 0.0),
        "r_elbow": (0.0, 280.0, 0.0),
        "l_elbow": (0.0, 280.0, 0.0),
        "r_wrist": (0.0, 255.0, 0.0),
        "l_wrist": (0.0, 255.0, 0.0),
    }
    # Signs: Rx(+) swings a hanging limb forward (+z); Rz(-) swings it to the subject's
    # right (+x); spine and neck flex forward with Rx(-) because they point up (−y).
    dofs = (
        Dof("spine_lat", "spine", "z", -0.35, 0.35, 0.0, 0.12),
        Dof("spine_flex", "spine", "x", -0.8, 0.3, -0.05, 0.2),
        Dof("spine_twist", "spine", "y", -0.5, 0.5, 0.0, 0.2),
        Dof("neck_lat", "neck", "z", -0.35, 0.35, 0.0, 0.12),
        Dof("neck_flex", "neck", "x", -0.6, 0.5, -0.15, 0.2),
        Dof("neck_twist", "neck", "y", -0.9, 0.9, 0.0, 0.35),
        Dof("r_hip_abd", "r_hip", "z", -0.8, 0.25, -0.05, 0.2),
        Dof("r_hip_flex", "r_hip", "x", -0.4, 1.9, 0.15, 0.45),
        Dof("r_hip_rot", "r_hip", "y", -0.5, 0.5, 0.0, 0.2),
        Dof("r_knee_flex", "r_knee", "x", -2.4, 0.0, -0.25, 0.5),
        Dof("l_hip_abd", "l_hip", "z", -0.25, 0.8, 0.05, 0.2),
        Dof("l_hip_flex", "l_hip", "x", -0.4, 1.9, 0.15, 0.45),
        Dof("l_hip_rot", "l_hip", "y", -0.5, 0.5, 0.0, 0.2),
        Dof("l_knee_flex", "l_knee", "x", -2.4, 0.0, -0.25, 0.5),
        Dof("r_sh_abd", "r_shoulder", "z", -2.5, 0.3, -0.3, 0.55),
        Dof("r_sh_flex", "r_shoulder", "x", -0.8, 2.8, 0.25, 0.65),
        Dof("r_sh_twist", "r_shoulder", "y", -0.8, 0.8, 0.0, 0.3),
        Dof("r_elbow_flex", "r_elbow", "x", 0.0, 2.5, 0.5, 0.6),
        Dof("l_sh_abd", "l_shoulder", "z", -0.3, 2.5, 0.3, 0.55),
        Dof("l_sh_flex", "l_shoulder", "x", -0.8, 2.8, 0.25, 0.65),
        Dof("l_sh_twist", "l_shoulder", "y", -0.8, 0.8, 0.0, 0.3),
        Dof("l_elbow_flex", "l_elbow", "x", 0.0, 2.5, 0.5, 0.6),
    )
    scale_groups = {
        "pelvis": "torso",
        "spine": "torso",
        "thorax": "torso",
        "neck": "head",
        "head": "head",
        "r_hip": "width",
        "l_hip": "width",
        "r_shoulder": "width",
        "l_shoulder": "width",
        "r_knee": "legs",
        "l_knee": "legs",
        "r_ankle": "legs",
        "l_ankle": "legs",
        "r_elbow": "arms",
        "l_elbow": "arms",
        "r_wrist": "arms",
        "l_wrist": "arms",
    }
    markers = (
        Marker("r_toe", "r_ankle", (0.0, 70.0, 140.0)),
        Marker("l_toe", "l_ankle", (0.0, 70.0, 140.0)),
        Marker("r_hand", "r_wrist", (0.0, 75.0, 0.0)),
        Marker("l_hand", "l_wrist", (0.0, 75.0, 0.0)),
        Marker("skull", "neck", (0.0, -45.0, -88.0)),
        Marker("hair", "neck", (0.0, -57.0, -108.0)),
        Marker("r_eye", "neck", (34.0, -75.0, -8.0)),
        Marker("l_eye", "neck", (-34.0, -75.0, -8.0)),
    )
    capsules = []
    for side in ("r", "l"):
        capsules += [
            Capsule("pelvis", f"{side}_hip", 95.0, 85.0, "pants"),
            Capsule(f"{side}_hip", f"{side}_knee", 80.0, 58.0, "pants"),
            Capsule(f"{side}_knee", f"{side}_ankle", 56.0, 44.0, "pants"),
            Capsule(f"{side}_ankle", f"{side}_toe", 42.0, 36.0, "shoe"),
            Capsule("thorax", f"{side}_shoulder", 62.0, 56.0, "shirt"),
            Capsule(f"{side}_shoulder", f"{side}_elbow", 50.0, 42.0, "shirt"),
            Capsule(f"{side}_elbow", f"{side}_wrist", 38.0, 31.0, "skin"),
            Capsule(f"{side}_wrist", f"{side}_hand", 33.0, 40.0, "skin"),
        ]
    capsules += [
        Capsule("pelvis", "spine", 120.0, 112.0, "shirt"),
        Capsule("spine", "thorax", 112.0, 118.0, "shirt"),
        Capsule("thorax", "neck", 52.0, 46.0, "skin"),
    ]
    spheres = (
        ("skull", 100.0, "skin"),
        ("hair", 100.0, "hair"),
        ("r_eye", 15.0, "eye"),
        ("l_eye", 15.0, "eye"),
        ("neck", 20.0, "skin"),  # the nose
        # A tuft of hair at the head top: at low resolution the skull's rendered disc can
        # miss the pixel nearest the head-top joint; a sphere centred on it cannot.
        ("head", 14.0, "hair"),
    )
    torso = Slab(
        points=("l_shoulder", "r_shoulder", "r_hip", "l_hip"),
        frames=("thorax", "thorax", "pelvis", "pelvis"),
        half=95.0,
        front="shirt",
        back="shirt_back",
    )
    label_shift = {
        "r_shoulder": ("thorax", 0.3),
        "l_shoulder": ("thorax", 0.3),
        "r_hip": ("pelvis", 0.25),
        "l_hip": ("pelvis", 0.25),
    }
    return SkeletonModel(
        joint_set="h36m17",
        offsets=offsets,
        rest={},
        dofs=dofs,
        scale_groups=scale_groups,
        scale_range=(0.86, 1.1),
        scale_jitter=0.05,
        markers=markers,
        capsules=tuple(capsules),
        spheres=spheres,
        slabs=(torso,),
        slots=("skin", "shirt", "shirt_back", "pants", "shoe", "hair", "eye"),
        label_shift=label_shift,
    )


BODY = _build()
