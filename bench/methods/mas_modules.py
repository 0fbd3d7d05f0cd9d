"""Mask as Supervision (S003): the skeleton forms of its cascade and the skeleton mask drawn
from keypoints (Eqs. 4, 15–17).

Bones are named by joint names, so any joint set that has the names works; the forms are
the choices recorded in ``methods/mask-as-supervision.yaml`` (the paper only draws them, in
its Fig. 7):

* the 16 kinematic bones of the 17-joint Human3.6M tree (pelvis→spine→thorax→neck→head,
  thorax→shoulders→elbows→wrists, pelvis→hips→knees→ankles);
* 8 auxiliary links that fill the torso and thighs, as the authors' later code
  (X-as-Supervision, ``cal_links``) hard-codes them: spine–hips, spine–shoulders,
  pelvis–knees, hips–shoulders;
* "tight" (cascade stage 1): every kinematic bone but the arms' (no elbow or wrist) and all
  8 auxiliary links — the torso, which varies least, is found first;
* "medium" (stage 2): all kinematic bones and the 6 auxiliary links without hip–shoulder
  ("fewer auxiliary connections, more flexibility");
* "loose" (stage 3): all kinematic bones and the 4 spine links only (arms and legs free).

``structure="points"`` is Table 5's "without structure prior": every joint of a form is a
bone to itself (a Gaussian blob), the paper's "each joint connected to itself".
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from bench.data.joints import JointSet
from bench.errors import DabenchError
from bench.models.skeleton_maps import bone_maps

KINEMATIC: tuple[tuple[str, str], ...] = (
    ("pelvis", "r_hip"),
    ("r_hip", "r_knee"),
    ("r_knee", "r_ankle"),
    ("pelvis", "l_hip"),
    ("l_hip", "l_knee"),
    ("l_knee", "l_ankle"),
    ("pelvis", "spine"),
    ("spine", "thorax"),
    ("thorax", "neck"),
    ("neck", "head"),
    ("thorax", "l_shoulder"),
    ("l_shoulder", "l_elbow"),
    ("l_elbow", "l_wrist"),
    ("thorax", "r_shoulder"),
    ("r_shoulder", "r_elbow"),
    ("r_elbow", "r_wrist"),
)
# the bones drawn thinner (the authors' code halves their exponent's width: σ ÷ √2)
ARM_BONES: frozenset[tuple[str, str]] = frozenset(
    {
        ("l_shoulder", "l_elbow"),
        ("l_elbow", "l_wrist"),
        ("r_shoulder", "r_elbow"),
        ("r_elbow", "r_wrist"),
    }
)
SPINE_LINKS: tuple[tuple[str, str], ...] = (
    ("spine", "r_hip"),
    ("spine", "l_hip"),
    ("spine", "l_shoulder"),
    ("spine", "r_shoulder"),
)
KNEE_LINKS: tuple[tuple[str, str], ...] = (("pelvis", "r_knee"), ("pelvis", "l_knee"))
SIDE_LINKS: tuple[tuple[str, str], ...] = (("r_hip", "r_shoulder"), ("l_hip", "l_shoulder"))

FORMS: dict[str, tuple[tuple[str, str], ...]] = {
    "tight": (
        *(b for b in KINEMATIC if b not in ARM_BONES),
        *SPINE_LINKS,
        *KNEE_LINKS,
        *SIDE_LINKS,
    ),
    "medium": (*KINEMATIC, *SPINE_LINKS, *KNEE_LINKS),
    "loose": (*KINEMATIC, *SPINE_LINKS),
}
STRUCTURES: tuple[str, ...] = ("skeleton", "points")
MERGES: tuple[str, ...] = ("sum", "max")


@dataclass(frozen=True)
class Skeleton:
    """The bones of one form as joint indices, and which are arms (drawn thinner)."""

    bones: tuple[tuple[int, int], ...]
    arms: tuple[bool, ...]

    @property
    def joints(self) -> tuple[int, ...]:
        """The joints the form draws, ascending."""
        return tuple(sorted({j for bone in self.bones for j in bone}))


def skeleton(jset: JointSet, form: str, structure: str = "skeleton") -> Skeleton:
    """The bones of ``form`` ("tight", "medium", "loose") in ``jset``'s indices; with
    ``structure="points"`` every joint the form touches is a zero-length bone."""
    if form not in FORMS:
        raise DabenchError(f"unknown skeleton form {form!r}; valid: {', '.join(FORMS)}")
    if structure not in STRUCTURES:
        raise DabenchError(f"unknown structure {structure!r}; valid: {', '.join(STRUCTURES)}")
    missing = sorted({n for bone in FORMS[form] for n in bone} - set(jset.joints))
    if missing:
        raise DabenchError(
            f"Mask as Supervision draws Human3.6M-style skeletons; joint set {jset.name} has "
            f"no {', '.join(missing)}"
        )
    index = {name: i for i, name in enumerate(jset.joints)}
    bones = tuple((index[a], index[b]) for a, b in FORMS[form])
    arms = tuple(bone in ARM_BONES for bone in FORMS[form])
    if structure == "points":
        joints = sorted({j for bone in bones for j in bone})
        # elbows and wrists: the joints only arm bones reach
        arm_joints = {index[n] for n in ("l_elbow", "l_wrist", "r_elbow", "r_wrist")}
        return Skeleton(tuple((j, j) for j in joints), tuple(j in arm_joints for j in joints))
    return Skeleton(bones, arms)


def skeleton_mask(
    points: Tensor,
    skel: Skeleton,
    size: tuple[int, int],
    width: float,
    *,
    arm_factor: float = 2.0,
    merge: str = "sum",
    clip: bool = False,
) -> Tensor:
    """M_Skel [B,h,w] from keypoints [B,K,2] in grid coordinates (Eqs. 4, 15–17).

    Each bone b is exp(−d_b²/w) with d_b the distance to its segment and ``width`` w = σ²
    of the paper ("σ ≈ 3e-3" is the whole denominator in [−1, 1] units, as the authors'
    code reads it); arm bones use w / ``arm_factor``. ``merge``: "sum" (the paper) or "max"
    (the authors' code); ``clip`` caps a sum at 1 where bones overlap. Differentiable w.r.t.
    ``points``.
    """
    if merge not in MERGES:
        raise DabenchError(f"unknown merge {merge!r}; valid: {', '.join(MERGES)}")
    if not width > 0 or not arm_factor > 0:
        raise DabenchError(f"width and arm_factor must be > 0, got {width}, {arm_factor}")
    sigmas = [(width / (arm_factor if arm else 1.0)) ** 0.5 for arm in skel.arms]
    maps = bone_maps(points, skel.bones, size, sigmas, squared=True)
    if merge == "max":
        return maps.amax(dim=1)
    merged = maps.sum(dim=1)
    return merged.clamp(max=1.0) if clip else merged
