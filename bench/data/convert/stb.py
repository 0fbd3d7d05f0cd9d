"""STB (Stereo Hand Pose Tracking Benchmark): per sequence ``B{1..6}{Counting,Random}`` the
label file ``labels/<seq>_BB.mat`` (variable ``handPara``, 3 × 21 × frames, mm, in the left
Bumblebee2 camera's frame; 1500 frames in the release, read from the file) and the left
Bumblebee2 images ``<seq>/BB_left_<i>.png`` (i = 0-based frame) under ``images/`` or, in some
copies, at the top level. Splits as hand3d and bihand: train = B2–B6, test = B1 (both
Counting and Random). The stereo right view and the SK camera are not used.

Units: kp3d = handPara (mm, left camera frame), stb21 order. STB's joint 0 is the palm
centre; it is replaced by an extrapolated wrist, ``ring_MCP + 2.0 · (palm − ring_MCP)`` in
3D (hand3d's BinaryDbReaderSTB), before projecting; the stb21 → hand21 mapping flags that slot
approximate. kp2d = projection of kp3d with the published fixed K of the left camera (STB has
no 2D labels, so its pixel convention is that of the calibration, taken as given). Every joint
is visible (no labels). Ids: seq = 10 · b + (0 Counting, 1 Random) for ``B<b>``, frame = i,
view = 0 (BB left)."""

from __future__ import annotations

import numpy as np

from bench.data.convert.base import Converter, Item, register
from bench.data.convert.raw import RawFiles
from bench.data.geometry import project
from bench.errors import DabenchError

KINDS = ("Counting", "Random")
SPLITS = {"train": (2, 3, 4, 5, 6), "test": (1,)}
# The left Bumblebee2 camera (hand3d data/stb/create_db.m; the STB README).
K_BB_LEFT = np.array([[822.79041, 0.0, 318.47345], [0.0, 822.79041, 250.31296], [0.0, 0.0, 1.0]])
PALM, RING_MCP = 0, 5  # stb21 indices
WRIST_FACTOR = 2.0


def sequence_id(background: int, kind: str) -> int:
    """``B<background><kind>`` as an integer id: B1Counting → 10, B6Random → 61."""
    return 10 * background + KINDS.index(kind)


def with_wrist(kp3d: np.ndarray) -> np.ndarray:
    """stb21 joints ``[..., 21, 3]`` with the palm centre replaced by the extrapolated wrist."""
    out = np.array(kp3d, dtype=np.float64)
    ring = out[..., RING_MCP, :]
    out[..., PALM, :] = ring + WRIST_FACTOR * (out[..., PALM, :] - ring)
    return out


@register
class STB(Converter):
    card = "stb"
    raw_joints = "stb21"
    fields = ("seq", "frame", "view")

    def items(self, raw: RawFiles, split: str) -> list[Item]:
        images = _image_root(raw)
        out = []
        for background in SPLITS[split]:
            for kind in KINDS:
                seq = f"B{background}{kind}"
                name = f"labels/{seq}_BB.mat"
                para = np.asarray(
                    raw.loadmat(
                        name,
                        f"the 3 x 21 x 1500 joint array 'handPara' of {seq}, left BB camera",
                        ("handPara",),
                    )["handPara"],
                    dtype=np.float64,
                )
                if para.ndim != 3 or para.shape[:2] != (3, 21) or para.shape[2] < 1:
                    raise DabenchError(
                        f"stb: {raw.root / name} holds 'handPara' of shape {para.shape}; expected "
                        "(3, 21, frames) (x y z in mm, 21 joints, 1500 frames in STB)"
                    )
                kp3d = with_wrist(para.transpose(2, 1, 0))
                _check_depths(raw, name, kp3d)
                for i in range(para.shape[2]):
                    image = f"{images}{seq}/BB_left_{i}.png"
                    raw.path(image, f"the left BB image of frame {i} of {seq}")
                    out.append(
                        Item(
                            image=image,
                            kp2d=project(kp3d[i], K_BB_LEFT),
                            vis=np.ones(21, bool),
                            kp3d=kp3d[i],
                            K=K_BB_LEFT,
                            seq=sequence_id(background, kind),
                            frame=i,
                            view=0,
                        )
                    )
        return out


def _image_root(raw: RawFiles) -> str:
    """``images/`` where the sequence folders are there, else the top level."""
    sequences = [f"B{b}{kind}" for b in range(1, 7) for kind in KINDS]
    for prefix in ("images/", ""):
        if any((raw.root / prefix / seq).is_dir() for seq in sequences):
            return prefix
    raise DabenchError(
        f"stb: no sequence folder (B1Counting/ … B6Random/ of BB_left_<i>.png images) in "
        f"{raw.root / 'images'} or {raw.root}; see the raw layout in datasets/stb.yaml"
    )


def _check_depths(raw: RawFiles, name: str, kp3d: np.ndarray) -> None:
    where = raw.root / name
    if not np.isfinite(kp3d).all():
        raise DabenchError(f"stb: {where} has non-finite joints")
    bad = np.nonzero((kp3d[..., 2] <= 0).any(axis=-1))[0]
    if len(bad):
        raise DabenchError(
            f"stb: frame {int(bad[0])} of {where} has joints at depth <= 0; expected points in "
            "front of the left BB camera (mm)"
        )
    if np.median(kp3d[..., 2]) < 10.0:
        raise DabenchError(
            f"stb: {where} puts the hand {np.median(kp3d[..., 2]):.2f} units from the camera "
            "(median): these look like metres; STB's handPara is in mm"
        )
